"""The engine on a GPU (issue 23), tested without one: the CUDA backend runs on a stand-in for
CuPy made of NumPy (tests/fake_cupy.py), strict where CuPy is (no host array in a device
operation, every value read back counted), so the device-agnostic step, data movement, the
``auto`` rule, the messages and cross-device run folders and checkpoints are checked on any
machine. The CUDA kernels themselves are tested at the end, on a real GPU only."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import fake_cupy
from dltrain import api
from dltrain.build import array_trainer
from dltrain.cli import app
from dltrain.engine import backend as backend_module
from dltrain.engine import cuda
from dltrain.errors import TrainingDiverged

runner = CliRunner()


@pytest.fixture
def fake_gpu(monkeypatch):
    """CuPy is the stand-in, and it finds one device."""
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "cupyx", fake_cupy.cupyx)
    monkeypatch.setattr(cuda, "installed", lambda: True)
    monkeypatch.setattr(cuda, "_backend", None)
    monkeypatch.setattr(backend_module, "_devices", [])
    monkeypatch.setattr(fake_cupy, "FREE_MEMORY", [64 << 30])
    return cuda.backend(fake_cupy)


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy fails, as where it is not installed
    monkeypatch.setattr(cuda, "_backend", None)


def _data(rows=96, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.random((rows, 12), dtype=np.float32)
    targets = (features[:, 0] + features[:, 1] > 1).astype(np.int64) + (features[:, 2] > 0.5)
    return features, targets


def _trainer(device, batch_size=16, rows=96, layers=None, fused=None, lr=0.01, **train):
    features, targets = _data(rows)
    settings = {
        "seed": 3,
        "model": {"layers": layers or [{"units": 20}, {"units": 10, "activation": "tanh"}]},
        "optimizer": {"name": "adam", "lr": lr},
        "train": {"epochs": 3, "batch_size": batch_size, "device": device, **train},
    }
    return array_trainer(settings, features, targets, ["a", "b", "c"], fused=fused)


def test_the_reference_step_runs_on_device_arrays_and_equals_the_cpu_bit_for_bit(fake_gpu):
    cpu = _trainer("cpu", fused=False)
    gpu = _trainer("cuda")
    assert gpu.backend is fake_gpu and not gpu.fused  # the stand-in has no kernel compilers
    assert isinstance(gpu.model.flat_params, fake_cupy.ndarray)
    # The same start: initial weights from the CPU generator.
    for key, value in cpu.model.host_params().items():
        assert np.array_equal(gpu.model.host_params()[key], value)
    cpu.run(), gpu.run()
    for key, value in cpu.model.host_params().items():
        assert np.array_equal(gpu.model.host_params()[key], value), key
    assert [record["loss"] for record in gpu.history] == [record["loss"] for record in cpu.history]
    assert [record["accuracy"] for record in gpu.history] == [record["accuracy"] for record in cpu.history]


def test_nothing_is_read_back_inside_a_step(fake_gpu):
    reads = []
    for batch_size in (32, 4):  # 3 and 24 steps an epoch
        trainer = _trainer("cuda", batch_size=batch_size)
        trainer.run()  # the data was uploaded when the trainer was built
        before = fake_cupy.SYNCS[0], fake_cupy.UPLOADS[0]
        trainer.train_epoch(4, 0.01)
        trainer.predictions.metrics()
        reads.append((fake_cupy.SYNCS[0] - before[0], fake_cupy.UPLOADS[0] - before[1]))
    assert reads[0] == reads[1]  # the same per epoch, whatever the number of steps
    syncs, uploads = reads[0]
    assert syncs <= 4 and uploads == 1  # losses, norms, the mean loss, predictions; the epoch's order


def test_the_data_moves_once_or_in_batches_from_the_host_with_the_same_result(fake_gpu, monkeypatch):
    uploaded = _trainer("cuda")
    assert uploaded.batches.from_host is None
    assert isinstance(uploaded.batches.arrays[0], fake_cupy.ndarray)
    monkeypatch.setattr(fake_cupy, "FREE_MEMORY", [1000])  # the training matrix does not fit
    streamed = _trainer("cuda")
    assert streamed.batches.from_host is not None
    assert not isinstance(streamed.batches.arrays[0], fake_cupy.ndarray)
    uploaded.run(), streamed.run()
    for key, value in uploaded.model.host_params().items():
        assert np.array_equal(streamed.model.host_params()[key], value)


def test_gradient_clipping_keeps_its_norm_on_the_device(fake_gpu):
    cpu, gpu = (_trainer(device, fused=False) for device in ("cpu", "cuda"))
    for trainer in (cpu, gpu):
        trainer.optimizer.clip_norm = 0.05
        trainer.run()
    before = fake_cupy.SYNCS[0]
    norm = gpu.optimizer.step(0.0)
    assert isinstance(norm, fake_cupy.ndarray) and fake_cupy.SYNCS[0] == before
    for key, value in cpu.model.host_params().items():
        np.testing.assert_allclose(gpu.model.host_params()[key], value, rtol=1e-5, atol=1e-6)


def test_divergence_on_the_device_names_the_first_bad_step_as_on_the_cpu(fake_gpu):
    messages = []
    for device in ("cpu", "cuda"):
        trainer = _trainer(device, fused=False, layers=[{"units": 20}, {"units": 20}], lr=1e38)
        with pytest.raises(TrainingDiverged) as caught:
            trainer.run()
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and "epoch 1, batch" in messages[0]


def test_dropout_masks_on_the_device_follow_the_seed(fake_gpu):
    layers = [{"units": 20}, {"type": "dropout", "rate": 0.3}, {"units": 10}]
    runs = []
    for _ in range(2):
        trainer = _trainer("cuda", layers=layers)
        trainer.run()
        runs.append(trainer.model.host_params())
    for key in runs[0]:
        assert np.array_equal(runs[0][key], runs[1][key])
    # A resumed epoch draws the masks it drew the first time: they come from the run's generator.
    straight = _trainer("cuda", layers=layers)
    straight.run()
    first = _trainer("cuda", layers=layers, epochs=3)
    first.options.epochs = 2
    first.run()
    meta, arrays = first.state()
    resumed = _trainer("cuda", layers=layers)
    resumed.load_state(meta, {key: np.array(value) for key, value in arrays.items()})
    resumed.run()
    for key, value in straight.model.host_params().items():
        assert np.array_equal(resumed.model.host_params()[key], value)


def test_a_checkpoint_resumes_on_the_other_device(fake_gpu):
    straight = _trainer("cpu", fused=False)
    straight.run()
    for first_device, second_device in (("cuda", "cpu"), ("cpu", "cuda")):
        first = _trainer(first_device, fused=False)
        first.options.epochs = 2
        first.run()
        meta, arrays = first.state()
        assert all(type(value) is np.ndarray for value in arrays.values())  # NumPy: readable anywhere
        second = _trainer(second_device, fused=False)
        second.load_state(meta, arrays)
        second.run()
        for key, value in straight.model.host_params().items():
            assert np.array_equal(second.model.host_params()[key], value), (first_device, key)


# ---------------------------------------------------------------- the auto rule and the messages


def test_auto_takes_the_gpu_only_where_one_is_found_and_the_step_is_large(fake_gpu, monkeypatch):
    small, large = cuda.AUTO_MIN_MACS - 1, cuda.AUTO_MIN_MACS
    assert cuda.choose("auto", small)[0] is None and "below" in cuda.choose("auto", small)[1]
    assert cuda.choose("auto", large)[0] is fake_gpu
    assert cuda.choose("cpu", large)[0] is None
    monkeypatch.setattr(cuda, "_backend", None)
    monkeypatch.setattr(fake_cupy.cuda.runtime, "getDeviceCount", lambda: 0)
    gpu, reason = cuda.choose("auto", large)
    assert gpu is None and "no CUDA device found" in reason


def test_auto_without_cupy_stays_on_the_cpu_and_never_imports_it(no_cupy):
    gpu, reason = cuda.choose("auto", 10**12)
    assert gpu is None and "CuPy is not installed" in reason
    with pytest.raises(cuda.DeviceUnavailable, match=r"pip install '\.\[cuda12\]'"):
        cuda.choose("cuda", 10)


def test_the_seed_network_and_the_wide_ones_fall_on_the_measured_sides_of_the_threshold():
    def macs(sizes, batch):
        return batch * sum(a * b for a, b in zip(sizes, sizes[1:]))

    for batch in (32, 128, 256):  # the CPU was as fast or faster (0.5-1.0 ms a step on 16 cores)
        assert macs([784, 128, 10], batch) < cuda.AUTO_MIN_MACS
    assert macs([784, 512, 512, 10], 256) >= cuda.AUTO_MIN_MACS  # 3.2 ms on the CPU, ~1 ms on a GPU
    assert macs([784, 1024, 1024, 10], 1024) >= cuda.AUTO_MIN_MACS


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--device", "cuda"], "--device cuda: CuPy is not installed; install it with pip install '.[cuda12]'"),
        (["--set", "train.device=cuda"], "train.device: cuda: CuPy is not installed"),
    ],
)
def test_cuda_without_cupy_is_one_message_naming_the_install(arguments, expected, no_cupy, root, tmp_path):
    result = runner.invoke(
        app, ["fit", str(root / "configs" / "iris.yaml"), "--out", str(tmp_path / "run"), *arguments]
    )
    assert result.exit_code == 2, result.output
    assert expected in result.output and "dltrain[" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_eval_and_predict_take_the_device_too(no_cupy, root, tmp_path):
    iris = root / "configs" / "iris.yaml"
    api.fit(iris, tmp_path / "run", {"train.epochs": 1})
    data = str(root / "data" / "iris.csv")
    for command in (["predict", str(tmp_path / "run"), data], ["eval", str(tmp_path / "run"), data]):
        assert runner.invoke(app, [*command, "--device", "cpu"]).exit_code == 0
        refused = runner.invoke(app, [*command, "--device", "cuda"])
        assert refused.exit_code == 2 and "--device cuda: CuPy is not installed" in refused.output


def test_tune_device_reaches_every_trial(root):
    from dltrain.tune.space import load_plan

    plan = load_plan(root / "configs" / "iris.yaml", "cuda")
    assert plan.config.train.device == "cuda"
    assert plan.config_with({}).train.device == "cuda"  # each trial's config (workers load the plan with it too)
    assert load_plan(root / "configs" / "iris.yaml").config.train.device == "auto"


def test_cuda_without_a_device_says_so(fake_gpu, monkeypatch, root, tmp_path):
    monkeypatch.setattr(cuda, "_backend", None)
    monkeypatch.setattr(fake_cupy.cuda.runtime, "getDeviceCount", lambda: 0)
    result = runner.invoke(
        app, ["fit", str(root / "configs" / "iris.yaml"), "--out", str(tmp_path / "r"), "--device", "cuda"]
    )
    assert result.exit_code == 2
    assert "--device cuda: no CUDA device found" in result.output and "--device cpu" in result.output


def test_fit_prints_the_device_and_why_and_stores_it(no_cupy, root, tmp_path):
    result = runner.invoke(
        app, ["fit", str(root / "configs" / "iris.yaml"), "--out", str(tmp_path / "run"), "--set", "train.epochs=1"]
    )
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("device: "))
    assert line.startswith("device: cpu (auto: ") and "multiply-adds per step, below" in line
    stored = json.loads((tmp_path / "run" / "model.json").read_text())
    assert stored["device"]["name"] == "cpu" and stored["device"]["setting"] == "auto"
    assert stored["config"]["train"]["device"] == "auto"


def test_version_names_the_gpu_or_how_to_get_one(fake_gpu, monkeypatch):
    assert cuda.describe() == "Fake GPU, 80.0 GiB, CuPy 0.0-fake"
    monkeypatch.setattr(cuda, "installed", lambda: False)
    assert cuda.describe().startswith("not available (CuPy not installed: pip install '.[cuda12]'")


# ---------------------------------------------------------------- portable run folders


def test_a_run_trained_on_the_gpu_predicts_on_the_cpu(fake_gpu, root, tmp_path):
    run = api.fit(root / "configs" / "iris.yaml", tmp_path / "run", {"train.epochs": 3}, device="cuda")
    stored = json.loads((tmp_path / "run" / "model.json").read_text())
    assert stored["device"]["name"] == "cuda" and "Fake GPU" in stored["device"]["reason"]
    assert type(run.model.flat_params) is np.ndarray  # loaded back on the CPU: auto, and iris is small
    on_gpu = api.load(tmp_path / "run", device="cuda")
    assert isinstance(on_gpu.model.flat_params, fake_cupy.ndarray)
    features = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    on_cpu = run.model.predict(features)
    assert type(on_cpu) is np.ndarray
    np.testing.assert_allclose(on_gpu.model.predict(features), on_cpu, rtol=1e-5, atol=1e-7)


def test_a_fit_resumes_on_the_other_device_from_the_command_line(fake_gpu, root, tmp_path):
    config = str(root / "configs" / "iris.yaml")
    straight = api.fit(config, tmp_path / "straight", {"train.epochs": 4}, device="cpu")
    half = ["fit", config, "--out", str(tmp_path / "half"), "--set", "train.epochs=2", "--device", "cuda"]
    assert runner.invoke(app, half).exit_code == 0
    rest = ["fit", config, "--out", str(tmp_path / "half"), "--set", "train.epochs=4", "--resume", "--device", "cpu"]
    result = runner.invoke(app, rest)
    assert result.exit_code == 0, result.output
    resumed = api.load(tmp_path / "half")
    for key, value in straight.model.host_params().items():
        np.testing.assert_array_equal(resumed.model.host_params()[key], value)


# ---------------------------------------------------------------- on a real GPU


def _real_gpu():
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 and cupy is not fake_cupy else None
    except Exception:
        return None


needs_cuda = pytest.mark.skipif(
    _real_gpu() is None, reason="no CUDA GPU here (CuPy and a device): the CUDA kernels are tested on a GPU machine"
)


@pytest.fixture
def gpu():
    return cuda.backend()


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 7), (9, 1), (131, 67), (1000, 300)])
def test_cuda_dense_kernels_equal_the_reference(gpu, dtype, shape):
    from dltrain.engine import cuda_kernels

    cupy = gpu.xp
    rng = np.random.default_rng(1)
    z = rng.normal(size=shape).astype(dtype)
    b = rng.normal(size=shape[1]).astype(dtype)
    tolerance = dict(rtol=2e-6, atol=2e-7) if dtype == "float32" else dict(rtol=1e-13, atol=1e-15)
    for relu in (True, False):
        got = cuda_kernels.bias_activation(cupy.asarray(z), cupy.asarray(b), relu)
        np.testing.assert_allclose(cupy.asnumpy(got), np.maximum(z + b, 0) if relu else z + b, **tolerance)
        a = np.maximum(z, 0)
        grad, db = cupy.asarray(z), cupy.empty(shape[1], dtype)
        cuda_kernels.bias_gradient(grad, cupy.asarray(a), db, relu)
        masked = z * (a > 0) if relu else z
        np.testing.assert_allclose(cupy.asnumpy(grad), masked, **tolerance)
        np.testing.assert_allclose(cupy.asnumpy(db), masked.sum(axis=0), rtol=1e-5, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("shape", [(1, 4), (37, 10), (1000, 3)])
def test_cuda_softmax_cross_entropy_kernel_equals_softmax_minus_onehot(gpu, shape):
    from dltrain.engine.losses import make_loss

    cupy = gpu.xp
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=shape) * 5).astype(np.float32)
    targets = rng.integers(0, shape[1], size=shape[0])
    weights = rng.uniform(0.5, 2.0, size=shape[0]).astype(np.float32)
    reference, fused = make_loss("cross_entropy", "softmax"), make_loss("cross_entropy", "softmax")
    fused.fused = True
    expected_grad, got_grad = np.empty_like(logits), cupy.empty(shape, np.float32)
    expected = reference.value_and_gradient(logits, targets, expected_grad, weights)
    got = fused.value_and_gradient(cupy.asarray(logits), cupy.asarray(targets), got_grad, cupy.asarray(weights))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(cupy.asnumpy(got_grad), expected_grad, rtol=2e-6, atol=2e-7)


@needs_cuda
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_cuda_adam_kernel_equals_the_textbook_update(gpu, weight_decay):
    from dltrain.engine.optimizers import make_optimizer

    cupy = gpu.xp
    rng = np.random.default_rng(3)
    start = {"dense_0.W": rng.normal(size=(1001, 3)).astype(np.float32), "dense_0.b": rng.normal(size=3)}
    start["dense_0.b"] = start["dense_0.b"].astype(np.float32)
    runs = []
    for fused in (False, True):
        params = {key: cupy.asarray(value) for key, value in start.items()}
        grads = {key: cupy.empty_like(value) for key, value in params.items()}
        optimizer = make_optimizer("adam", params, grads, lr=0.01, weight_decay=weight_decay)
        optimizer.fused = fused
        gradients = np.random.default_rng(4)
        norms = []
        for _ in range(3):
            for grad in grads.values():
                grad[...] = cupy.asarray(gradients.normal(size=grad.shape).astype(np.float32))
            norms.append(float(optimizer.step()))
        runs.append(({key: cupy.asnumpy(value) for key, value in params.items()}, norms))
    for key in start:
        np.testing.assert_allclose(runs[1][0][key], runs[0][0][key], rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-6)


@needs_cuda
def test_the_same_seed_on_the_gpu_gives_a_bit_identical_model_and_the_cpus_loss(gpu):
    layers = [{"units": 256}, {"units": 128}]
    models = []
    for _ in range(2):
        trainer = _trainer("cuda", batch_size=16, rows=800, layers=layers)
        assert trainer.fused  # the CUDA kernels
        trainer.options.epochs = 1
        trainer.run()
        models.append(trainer.model.host_params())
    for key in models[0]:
        assert np.array_equal(models[0][key], models[1][key])
    # CPU against GPU: the loss after 50 steps, within 1e-4 relative in float32.
    losses = []
    for device in ("cpu", "cuda"):
        trainer = _trainer(device, batch_size=16, rows=800, layers=layers, shuffle=False)
        losses.append(trainer.train_epoch(1, 0.01))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
