"""course_utils.distributed: a real two-process gloo run whose all-reduced gradients equal one process's."""

import multiprocessing
import socket
import time

import pytest
import torch

from course_utils import distributed


@pytest.fixture(scope="module")
def run():
    return distributed.run_data_parallel(world_size=2, steps=3)


def test_all_reduced_gradients_equal_the_combined_batch_gradient(run):
    single = distributed.single_process_gradients(seed=0, world_size=2, step=0)
    for rank in range(2):
        assert run.grads[rank].keys() == single.keys()
        for name, g in single.items():
            torch.testing.assert_close(run.grads[rank][name], g, atol=1e-6, rtol=1e-5)
    # ... while one shard's own gradient is clearly different (the check can fail)
    assert max((run.local_grads[0][n] - g).abs().max().item() for n, g in single.items()) > 1e-3


def test_ddp_replicas_stay_identical_and_match_one_process(run):
    single = distributed.single_process_training(seed=0, world_size=2, steps=3)
    for name, p in single.items():
        torch.testing.assert_close(run.params[0][name], run.params[1][name], atol=0, rtol=0)
        torch.testing.assert_close(run.params[0][name], p, atol=1e-5, rtol=1e-4)
    assert len(run.losses) == 2 and all(len(l) == 3 for l in run.losses)
    assert run.losses[0] != run.losses[1]  # each rank saw its own half of the batch


def test_two_real_processes_and_a_clean_shutdown(run):
    import os

    assert len(set(run.pids)) == 2 and os.getpid() not in run.pids
    assert run.seconds < 60
    assert multiprocessing.active_children() == []


def test_batches_and_slices():
    x, y = distributed.make_batch(0, world_size=2)
    x2, y2 = distributed.make_batch(0, world_size=2)
    assert x.shape == (2 * distributed.BATCH_PER_RANK, distributed.CONTEXT) and y.shape == (x.shape[0],)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, distributed.make_batch(1, world_size=2)[0])
    halves = torch.cat([distributed.rank_slice(x, r, 2) for r in range(2)])
    assert torch.equal(halves, x)


def test_free_port_is_bindable():
    port = distributed.free_port()
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_bad_arguments():
    with pytest.raises(ValueError, match="world_size"):
        distributed.run_data_parallel(world_size=0)
    with pytest.raises(ValueError, match="steps"):
        distributed.run_data_parallel(steps=0)


def test_timeout_stops_the_workers():
    start = time.perf_counter()
    with pytest.raises(TimeoutError):
        distributed.run_data_parallel(world_size=2, steps=1, timeout_s=0.001)
    assert time.perf_counter() - start < 30
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_spawn_start_method_works_too():
    """The portable path (macOS, Windows): the worker is a top-level function that spawn can pickle."""
    spawned = distributed.run_data_parallel(world_size=2, steps=1, start_method="spawn")
    single = distributed.single_process_gradients()
    for name, g in single.items():
        torch.testing.assert_close(spawned.grads[1][name], g, atol=1e-6, rtol=1e-5)
    assert multiprocessing.active_children() == []


def test_unknown_start_method():
    with pytest.raises(ValueError, match="start_method"):
        distributed.run_data_parallel(start_method="teleport")


@pytest.mark.skipif(distributed.default_start_method() != "fork", reason="needs forked workers to see the patch")
def test_a_failing_worker_is_reported_with_its_traceback(monkeypatch):
    def broken(seed=0):
        raise ValueError("no model today")

    monkeypatch.setattr(distributed, "make_model", broken)
    with pytest.raises(RuntimeError, match="no model today"):
        distributed.run_data_parallel(world_size=2, steps=1, timeout_s=60)
    assert multiprocessing.active_children() == []
