"""Streaming least squares: exact recovery, pseudo-inverse equality, streaming and reduction."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from snnet import LeastSquaresAccumulator, least_squares


def _fit(a, b, chunks=1):
    acc = LeastSquaresAccumulator(a.shape[1], b.shape[1])
    for ac, bc in zip(a.chunk(chunks), b.chunk(chunks)):
        acc.update(ac, bc)
    return acc


def test_planted_affine_map_is_recovered_with_r2_one():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 24, generator=g, dtype=torch.float64)
    w, bias = torch.randn(16, 24, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    acc = _fit(a, a @ w.T + bias)
    w_hat, b_hat = acc.solve()
    torch.testing.assert_close(w_hat, w, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(b_hat, bias, rtol=1e-9, atol=1e-9)
    assert acc.r2(w_hat, b_hat) == pytest.approx(1.0, abs=1e-12)


def test_streaming_equals_one_batch_and_pinv():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1000, 32, generator=g) * torch.linspace(0.01, 10, 32)
    b = torch.tanh(a[:, :20] @ torch.randn(20, 8, generator=g)) + 0.1 * torch.randn(1000, 8, generator=g)
    one, many = _fit(a, b, 1), _fit(a, b, 37)
    w1, b1 = one.solve()
    w2, b2 = many.solve()
    torch.testing.assert_close(w1, w2, rtol=1e-8, atol=1e-10)
    w_ref, b_ref = least_squares(a, b)
    torch.testing.assert_close(w1, w_ref, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(b1, b_ref, rtol=1e-6, atol=1e-8)
    # R^2 from the accumulated sums equals R^2 computed on the data.
    pred = a.double() @ w1.T + b1
    direct = 1 - (pred - b.double()).square().sum() / b.double().square().sum()
    assert one.r2(w1, b1) == pytest.approx(direct.item(), rel=1e-9)
    assert 0 < one.r2(w1, b1) < 1


def test_rank_deficient_inputs_give_the_minimum_norm_solution():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(300, 5, generator=g, dtype=torch.float64)
    a = torch.cat([base, base[:, :2] * 3.0], dim=1)  # 7 columns, rank 5
    b = torch.randn(300, 4, generator=g, dtype=torch.float64)
    w, bias = _fit(a, b).solve()
    w_ref, b_ref = least_squares(a, b)
    torch.testing.assert_close(w, w_ref, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(bias, b_ref, rtol=1e-7, atol=1e-9)


def test_merge_of_shards_equals_the_whole():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(400, 10, generator=g), torch.randn(400, 6, generator=g)
    left, right = _fit(a[:150], b[:150]), _fit(a[150:], b[150:])
    whole = _fit(a, b)
    merged = left.merge_(right)
    for x, y in zip(merged.tensors(), whole.tensors()):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-9)


def test_shape_errors_and_empty_solve():
    acc = LeastSquaresAccumulator(4, 3)
    with pytest.raises(ValueError, match=r"expected a: \(n, 4\) and b: \(n, 3\)"):
        acc.update(torch.zeros(5, 4), torch.zeros(6, 3))
    with pytest.raises(ValueError, match="no samples"):
        acc.solve()


def _all_reduce_worker(rank, world_size, port, a, b, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        acc = _fit(a.chunk(world_size)[rank], b.chunk(world_size)[rank])
        acc.all_reduce_()
        w, bias = acc.solve()
        out[rank] = torch.cat([w.flatten(), bias])
    finally:
        dist.destroy_process_group()


def test_all_reduce_across_gloo_ranks_equals_single_process():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(200, 8, generator=g), torch.randn(200, 5, generator=g)
    out = mp.Manager().dict()
    mp.spawn(_all_reduce_worker, args=(2, port, a, b, out), nprocs=2, join=True)
    w, bias = _fit(a, b).solve()
    expected = torch.cat([w.flatten(), bias])
    for rank in range(2):
        torch.testing.assert_close(out[rank], expected, rtol=1e-9, atol=1e-9)
