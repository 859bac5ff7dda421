"""mlrunner.resources.gpus: nvidia-smi discovery (through a fake nvidia-smi), share locks, OOM triage."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from fake_gpus import install_fake_nvidia_smi, write_table

from mlrunner.errors import MlrunnerError, ResourceError
from mlrunner.resources import (
    GpuInfo,
    NvidiaSmiNotFound,
    ShareLock,
    classify_failure,
    query_gpus,
)
from mlrunner.resources import gpus as gpu
from mlrunner.status import FailureClass

# --- discovery -----------------------------------------------------------------------------


def test_query_gpus_reads_the_fake_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_nvidia_smi(monkeypatch, tmp_path)
    gpus = query_gpus()
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert gpus[3] == GpuInfo(
        index=3,
        uuid="GPU-00000000-0000-0000-0000-000000000003",
        name="NVIDIA Fake H100 80GB HBM3",
        memory_total_mib=81920,
        memory_used_mib=81000,
        memory_free_mib=920,
        utilization=100,
    )
    assert [g.memory_free_mib for g in gpus] == [80920, 61920, 81420, 920]


def test_query_gpus_handles_na_values_and_odd_indices(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    table = install_fake_nvidia_smi(monkeypatch, tmp_path)
    write_table(
        table,
        [
            {"index": 2, "name": "Tesla V100-SXM2-16GB", "memory_total": 16160, "memory_used": 0},
            {"index": 5, "memory_total": "[N/A]", "memory_used": "[N/A]", "utilization": "[Not Supported]"},
        ],
    )
    a, b = query_gpus()
    assert (a.index, a.name, a.memory_free_mib) == (2, "Tesla V100-SXM2-16GB", 16160)
    assert (b.index, b.memory_total_mib, b.memory_free_mib, b.utilization) == (5, 0, 0, 0)


def test_query_gpus_reads_a_csv_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_nvidia_smi(monkeypatch, tmp_path)
    csv_table = tmp_path / "gpus.csv"
    csv_table.write_text(
        "index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu\n"
        "0, GPU-aaa, NVIDIA A100-SXM4-40GB, 40960, 40000, 960, 99\n"
        "1, GPU-bbb, NVIDIA A100-SXM4-40GB, 40960, 10, 40950, 0\n"
    )
    monkeypatch.setenv("FAKE_NVIDIA_SMI_GPUS", str(csv_table))
    assert [(g.uuid, g.memory_free_mib) for g in query_gpus()] == [("GPU-aaa", 960), ("GPU-bbb", 40950)]


def test_no_nvidia_smi_says_how_to_list_slots_by_hand(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(NvidiaSmiNotFound) as info:
        query_gpus()
    text = str(info.value)
    assert isinstance(info.value, ResourceError) and isinstance(info.value, MlrunnerError)
    assert "nvidia-smi is not on PATH" in text
    assert "`resource: [0, 1]`" in text and "`-r 0 -r 1`" in text
    assert "Traceback" not in text


def test_broken_driver_shows_what_nvidia_smi_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_nvidia_smi(monkeypatch, tmp_path)
    monkeypatch.setenv("FAKE_NVIDIA_SMI_FAIL", "9")
    with pytest.raises(ResourceError) as info:
        query_gpus()
    text = str(info.value)
    assert not isinstance(info.value, NvidiaSmiNotFound)
    assert "exit code 9" in text
    assert "couldn't communicate with the NVIDIA driver" in text
    assert "`resource: [0, 1]`" in text


def test_hanging_nvidia_smi_times_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_nvidia_smi(monkeypatch, tmp_path)
    monkeypatch.setenv("FAKE_NVIDIA_SMI_SLEEP", "30")
    with pytest.raises(ResourceError, match=r"did not answer within 0\.3 s"):
        query_gpus(timeout=0.3)


def test_unreadable_answer_is_a_clear_error() -> None:
    with pytest.raises(ResourceError, match="line 2: expected 7 fields"):
        gpu.parse_gpu_table("0, GPU-a, X, 1, 1, 0, 0\nNo devices were found\n")
    with pytest.raises(ResourceError, match="GPU index 'x' is not a number"):
        gpu.parse_gpu_table("x, GPU-a, X, 1, 1, 0, 0\n")
    assert gpu.parse_gpu_table("\n") == []


def test_fake_nvidia_smi_rejects_other_queries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_nvidia_smi(monkeypatch, tmp_path)
    done = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv"], capture_output=True, text=True)
    assert done.returncode == 2 and "unsupported arguments" in done.stderr


# --- share locks ---------------------------------------------------------------------------


def test_default_lock_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLRUNNER_GPU_LOCK_DIR", raising=False)
    assert gpu.default_lock_dir() == os.path.join(tempfile.gettempdir(), "mlrunner-gpu-locks")
    monkeypatch.setenv("MLRUNNER_GPU_LOCK_DIR", str(tmp_path / "x"))
    assert gpu.default_lock_dir() == str(tmp_path / "x")


def test_share_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    lock_dir = gpu.ensure_lock_dir(str(tmp_path / "locks with 'quotes' $(touch pwned) and .."))
    assert stat.S_IMODE(os.stat(lock_dir).st_mode) == 0o1777
    mine = tmp_path / "my locks"
    mine.mkdir(mode=0o700)
    assert gpu.ensure_lock_dir(str(mine)) == str(mine)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700  # an existing directory is left alone
    first = ShareLock.try_take(lock_dir, 0, 0)
    assert first is not None and first.held
    assert first.path == os.path.join(lock_dir, "gpu0.share0.lock")
    assert ShareLock.try_take(lock_dir, 0, 0) is None  # even from this process
    other = ShareLock.try_take(lock_dir, 0, 1)
    assert other is not None
    first.release()
    assert not first.held
    again = ShareLock.try_take(lock_dir, 0, 0)
    assert again is not None
    again.release()
    other.release()
    assert stat.S_IMODE(os.stat(first.path).st_mode) == 0o666
    assert not (tmp_path / "pwned").exists()


def test_uncreatable_lock_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ResourceError, match="cannot create the GPU lock directory") as info:
        gpu.ensure_lock_dir(str(tmp_path / "file" / "locks"))
    assert "MLRUNNER_GPU_LOCK_DIR" in str(info.value)


def test_lock_file_symlink_is_refused(tmp_path: Path) -> None:
    lock_dir = gpu.ensure_lock_dir(str(tmp_path / "locks"))
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    os.symlink(victim, os.path.join(lock_dir, "gpu0.share0.lock"))
    with pytest.raises(ResourceError, match="cannot open the GPU lock file"):
        ShareLock.try_take(lock_dir, 0, 0)
    assert victim.read_text() == "keep me"


def test_a_killed_holder_frees_its_share(tmp_path: Path) -> None:
    lock_dir = gpu.ensure_lock_dir(str(tmp_path / "locks"))
    holder = textwrap.dedent(
        f"""
        import sys, time
        from mlrunner.resources import ShareLock
        lock = ShareLock.try_take({lock_dir!r}, 1, 0)
        print("held" if lock else "busy", flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert ShareLock.try_take(lock_dir, 1, 0) is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lock = ShareLock.try_take(lock_dir, 1, 0)
    assert lock is not None
    lock.release()


def test_allocator_names_are_reexported() -> None:
    from mlrunner.resources import Allocation, SlotAllocator
    from mlrunner.resources import Allocation as A2
    from mlrunner.resources import SlotAllocator as S2

    assert (Allocation, SlotAllocator) == (A2, S2)
    with pytest.raises(AttributeError):
        gpu.NoSuchThing  # noqa: B018


# --- failure triage ------------------------------------------------------------------------

PYTORCH_OOM = (
    "Epoch 3:  41%|████      | 410/1000 [01:02<01:29,  6.59it/s, loss=0.412]\n"
    "Traceback (most recent call last):\n"
    '  File "/home/me/proj/train.py", line 88, in <module>\n'
    "    loss.backward()\n"
    '  File "/opt/conda/lib/python3.11/site-packages/torch/_tensor.py", line 522, in backward\n'
    "    torch.autograd.backward(\n"
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
    "of 79.15 GiB of which 1.12 GiB is free. Including non-PyTorch memory, this process has 78.02 GiB "
    "memory in use. Of the allocated memory 75.20 GiB is allocated by PyTorch, and 1.33 GiB is reserved "
    "by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.\n"
)

PYTORCH_OLD_OOM = (
    '  File "/usr/lib/python3.8/site-packages/torch/nn/modules/conv.py", line 443, in _conv_forward\n'
    "    return F.conv2d(input, weight, bias, self.stride,\n"
    "RuntimeError: CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 10.76 GiB total capacity; "
    "9.21 GiB already allocated; 311.56 MiB free; 9.45 GiB reserved in total by PyTorch)\n"
)

PYTORCH_CUBLAS = (
    '  File "/opt/conda/lib/python3.10/site-packages/torch/nn/modules/linear.py", line 114, in forward\n'
    "    return F.linear(input, self.weight, self.bias)\n"
    "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`\n"
)

TF_OOM = (
    "2024-05-02 10:11:12.123456: W tensorflow/core/common_runtime/bfc_allocator.cc:474] Allocator "
    "(GPU_0_bfc) ran out of memory trying to allocate 4.00GiB (rounded to 4294967296)requested by op MatMul\n"
    "Traceback (most recent call last):\n"
    '  File "train_tf.py", line 40, in <module>\n'
    "    model.fit(ds, epochs=10)\n"
    "tensorflow.python.framework.errors_impl.ResourceExhaustedError: Graph execution error:\n\n"
    "OOM when allocating tensor with shape[65536,16384] and type float on "
    "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc\n"
    "\t [[{{node dense/MatMul}}]]\n"
    "Hint: If you want to see a list of allocated tensors when OOM happens, add "
    "report_tensor_allocations_upon_oom.\n"
)

JAX_OOM = (
    "Traceback (most recent call last):\n"
    '  File "/home/me/jaxproj/main.py", line 12, in <module>\n'
    "    y = f(x)\n"
    "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
    "34359738368 bytes.\n"
    "--------------------\n"
    "For simplicity, JAX has removed its internal frames from the traceback of the following exception.\n"
)

JAX_OOM_SHORT = (
    "2024-01-01 00:00:00.000 E external/xla/xla/pjrt/pjrt_stream_executor_client.cc] Execution "
    "of replica 0 failed: RESOURCE_EXHAUSTED: Out of memory allocating 8589934592 bytes.\n"
)

CUDA_RUNTIME = "cudaMalloc failed: cudaErrorMemoryAllocation: out of memory\nAborted (core dumped)\n"

NOT_OOM = {
    "value error": 'Traceback (most recent call last):\n  File "t.py", line 3, in <module>\n'
    "ValueError: learning rate must be positive, got -0.1\n",
    "host MemoryError": 'Traceback (most recent call last):\n  File "t.py", line 3, in <module>\n'
    "    x = [0] * 10**12\nMemoryError\n",
    "nccl": "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1275, "
    "unhandled system error\n",
    "device assert": "RuntimeError: CUDA error: device-side assert triggered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call\n",
    "missing module": "ModuleNotFoundError: No module named 'torch'\n",
    "killed": "bash: line 1: 4242 Killed                  python train.py --lr 0.1\n",
    "empty": "",
}


@pytest.mark.parametrize(
    "tail", [PYTORCH_OOM, PYTORCH_OLD_OOM, PYTORCH_CUBLAS, TF_OOM, JAX_OOM, JAX_OOM_SHORT, CUDA_RUNTIME]
)
def test_classify_failure_finds_cuda_oom(tail: str) -> None:
    assert classify_failure(tail) == FailureClass.GPU_OOM


@pytest.mark.parametrize("tail", list(NOT_OOM.values()), ids=list(NOT_OOM))
def test_classify_failure_leaves_other_failures_alone(tail: str) -> None:
    assert classify_failure(tail) is None


@pytest.mark.parametrize(
    "line",
    [
        "torch.cuda.OutOfMemoryError: boom",
        "RuntimeError: CUDA error: out of memory",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "XlaRuntimeError: RESOURCE_EXHAUSTED: ",
    ],
)
def test_classify_failure_single_lines(line: str) -> None:
    assert classify_failure("step 1\n" + line + "\n") == FailureClass.GPU_OOM
