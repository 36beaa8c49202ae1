"""Interactive widgets, one module per topic (``widgets.attention``, ``widgets.sampling``, ...).

Each topic module holds that topic's plotting functions (arrays -> matplotlib figure, nothing else) and its
widget factories. A factory returns the widget and accepts the learner's own functions where that makes
sense, so tests can build and drive it headlessly (set ``.value``, assert on state). Shared plumbing is in
:mod:`course_utils.widgets.common`: every widget's display also carries a static picture of its state (for
front ends without a widget manager), and while a notebook is autograded (``NBGRADER_EXECUTION`` set) the
factories build nothing and return a short note instead.
"""
