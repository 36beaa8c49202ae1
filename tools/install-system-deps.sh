#!/usr/bin/env bash
# Install the Debian packages the optional parts of the test suite use, when this machine lets us:
#   chromium    browser tests of the widgets (tests/test_browser.py)
#   bubblewrap  sandbox for autograding (course_utils/sandbox.py)
# Without root or apt-get this prints what is missing and exits 0: the tests that need them skip with a reason.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq "${need[@]}") >/tmp/llm-foundations-apt.log 2>&1 \
    || echo "warning: apt-get install ${need[*]} failed (see /tmp/llm-foundations-apt.log); dependent tests will skip"
else
  echo "note: not installed (need root + apt-get): ${need[*]}; the tests that need them will skip"
fi
exit 0
