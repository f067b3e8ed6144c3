"""CPUSyncBatchNorm over two gloo processes equals BatchNorm2d over the whole batch (outputs, grads, running stats)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from cpnet.sync_bn import CPUSyncBatchNorm, convert_sync_batchnorm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, x, w, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    bn = CPUSyncBatchNorm(x.shape[1])
    with torch.no_grad():
        bn.weight.copy_(w[0])
        bn.bias.copy_(w[1])
    part = x.chunk(world)[rank].clone().requires_grad_()
    y = bn(part)
    (y * torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    torch.save({"y": y.detach(), "gx": part.grad, "gw": bn.weight.grad, "gb": bn.bias.grad,
                "rm": bn.running_mean, "rv": bn.running_var}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_cpu_sync_bn_matches_batchnorm_on_the_whole_batch(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    w = torch.randn(2, 3)
    mp.spawn(_worker, args=(2, _free_port(), x, w, str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]

    ref = nn.BatchNorm2d(3)
    with torch.no_grad():
        ref.weight.copy_(w[0])
        ref.bias.copy_(w[1])
    xr = x.clone().requires_grad_()
    y = ref(xr)
    (y * torch.cat([torch.arange(y.numel() // 2, dtype=y.dtype).reshape(2, 3, 5, 5)] * 2)).sum().backward()

    assert torch.allclose(torch.cat([p["y"] for p in parts]), y.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([p["gx"] for p in parts]), xr.grad, atol=1e-5)
    # parameter gradients are per process (DDP averages them); their sum is the whole batch's
    assert torch.allclose(parts[0]["gw"] + parts[1]["gw"], ref.weight.grad, atol=1e-4)
    assert torch.allclose(parts[0]["gb"] + parts[1]["gb"], ref.bias.grad, atol=1e-4)
    for p in parts:
        assert torch.allclose(p["rm"], ref.running_mean, atol=1e-6)
        assert torch.allclose(p["rv"], ref.running_var, atol=1e-5)


def test_convert_keeps_state_and_batchnorm_keys():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    model[1].running_mean.fill_(2.0)
    keys = set(model.state_dict())
    converted = convert_sync_batchnorm(model, torch.device("cpu"))
    assert isinstance(converted[1], CPUSyncBatchNorm) and isinstance(converted[2][0], CPUSyncBatchNorm)
    assert set(converted.state_dict()) == keys
    assert torch.equal(converted[1].running_mean, torch.full((4,), 2.0))
    # outside torch.distributed it is a plain BatchNorm2d
    x = torch.randn(2, 4, 3, 3)
    ref = nn.BatchNorm2d(4)
    ref.load_state_dict(converted[2][0].state_dict())
    assert torch.allclose(converted[2][0](x), ref(x))
