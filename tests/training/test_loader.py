import signal

import lightning
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, DistributedSampler

from physml_md.training.loader import EpochSampler, ResumableLoader

N_ITEMS = 10
BATCH_SIZE = 3  # 4 batches per epoch: 3, 3, 3, 1


def _dataset(n=N_ITEMS):
    """Item i is [i, x_i]: the index travels with the data, so a batch says which items it holds."""
    return [torch.tensor([float(i), 0.1 * i - 0.4], dtype=torch.float64) for i in range(n)]


def _order(loader):
    return [batch[:, 0].long().tolist() for batch in loader]


def test_order_is_a_pure_function_of_seed_and_epoch():
    loader = ResumableLoader(_dataset(), BATCH_SIZE, seed=5)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    epoch0 = _order(loader)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be used"
    torch.manual_seed(123)  # another global state changes nothing
    again = ResumableLoader(_dataset(), BATCH_SIZE, seed=5)
    assert _order(again) == epoch0 == _order(loader)
    loader.set_epoch(1)
    epoch1 = _order(loader)
    assert epoch1 != epoch0
    assert sorted(sum(epoch1, [])) == list(range(N_ITEMS)) and [len(b) for b in epoch1] == [3, 3, 3, 1]
    assert _order(ResumableLoader(_dataset(), BATCH_SIZE, seed=6)) != epoch0
    # seed s, epoch e: torch.randperm from a generator seeded with s + e
    expected = torch.randperm(N_ITEMS, generator=torch.Generator().manual_seed(5 + 1)).tolist()
    assert sum(epoch1, []) == expected
    assert _order(ResumableLoader(_dataset(), BATCH_SIZE, shuffle=False)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_like_distributed_sampler(world_size, shuffle):
    n = 10
    lengths = set()
    for rank in range(world_size):
        sampler = EpochSampler(n, seed=3, shuffle=shuffle, rank=rank, world_size=world_size)
        reference = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=3)
        for epoch in (0, 2):
            sampler.set_epoch(epoch)
            reference.set_epoch(epoch)
            assert list(sampler) == list(reference)
        loader = ResumableLoader(_dataset(n), BATCH_SIZE, seed=3, shuffle=shuffle, rank=rank, world_size=world_size)
        lengths.add(len(loader))
        assert len(_order(loader)) == len(loader)
    assert len(lengths) == 1, "every rank must get the same number of batches"


def test_state_dict_resumes_the_epoch_outside_lightning():
    loader = ResumableLoader(_dataset(), BATCH_SIZE, seed=1)
    loader.set_epoch(2)
    full = _order(loader)
    iterator = iter(loader)
    first = [next(iterator)[:, 0].long().tolist() for _ in range(2)]
    state = loader.state_dict()
    assert (state["epoch"], state["batches"]) == (2, 2)
    resumed = ResumableLoader(_dataset(), BATCH_SIZE, seed=1)
    resumed.load_state_dict(state)
    assert first + _order(resumed) == full
    assert _order(resumed) == full, "only the interrupted iteration skips"
    # a finished epoch resumes at the start of the next one
    for _ in iterator:
        pass
    finished = ResumableLoader(_dataset(), BATCH_SIZE, seed=1)
    finished.load_state_dict(loader.state_dict())
    loader.set_epoch(3)
    assert _order(finished) == _order(loader)
    # a resumed epoch that Lightning replaces by another one (set_epoch) is not skipped into
    other = ResumableLoader(_dataset(), BATCH_SIZE, seed=1)
    other.load_state_dict(state)
    other.set_epoch(3)
    assert _order(other) == _order(loader)


def test_resume_mid_epoch_with_other_settings_is_an_error():
    loader = ResumableLoader(_dataset(), BATCH_SIZE, seed=1)
    loader.set_epoch(4)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    with pytest.raises(ValueError, match=r"middle of epoch 4.*batch_size 3 -> 4.*same training data, batch size"):
        ResumableLoader(_dataset(), 4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"n 10 -> 11; seed 1 -> 2"):
        ResumableLoader(_dataset(11), BATCH_SIZE, seed=2).load_state_dict(state)
    # after a finished epoch the next one starts from its beginning, whatever changed
    for _ in iterator:
        pass
    other = ResumableLoader(_dataset(11), 4, seed=2)
    other.load_state_dict(loader.state_dict())
    reference = ResumableLoader(_dataset(11), 4, seed=2)
    reference.set_epoch(5)
    assert _order(other) == _order(reference)


def test_workers_give_the_same_batches_and_count_only_what_was_handed_out():
    plain = ResumableLoader(_dataset(), BATCH_SIZE, seed=4)
    workers = ResumableLoader(_dataset(), BATCH_SIZE, seed=4, num_workers=1)
    iterator = iter(workers)
    first = next(iterator)[:, 0].long().tolist()
    assert workers.state_dict()["batches"] == 1  # the worker has pre-fetched more, they are not counted
    assert [first] + [b[:, 0].long().tolist() for b in iterator] == _order(plain)


# ------------------------------------------------------------------------------------------ with Lightning


class Linear(lightning.LightningModule):
    """y = w x + b fitted by SGD, recording the items of every batch it trains on."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1, dtype=torch.float64)
        with torch.no_grad():
            self.layer.weight.fill_(0.3)
            self.layer.bias.fill_(-0.2)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[:, 0].long().tolist())
        x = batch[:, 1:2]
        target = 2.0 * x + torch.sin(batch[:, :1])  # depends on the item: the order matters to SGD
        return torch.mean((self.layer(x) - target) ** 2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.3)


class Data(lightning.LightningDataModule):
    def __init__(self, resumable: bool):
        super().__init__()
        self.resumable = resumable

    def train_dataloader(self):
        if self.resumable:
            return ResumableLoader(_dataset(), BATCH_SIZE, seed=7)
        return DataLoader(_dataset(), BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(7))


class InterruptAtStep(Callback):
    """Ctrl+C before the optimizer step ``step + 1``."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class CheckSavedCount(Callback):
    """The loader's saved batch count must be what Lightning's loop has taken from it in this epoch."""

    def __init__(self):
        self.saved = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        states = checkpoint["loops"]["fit_loop"]["state_dict"].get("combined_loader", [])
        ready = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        self.saved.append((trainer.global_step, [s["batches"] for s in states], ready))


@pytest.fixture
def lightning_globals(monkeypatch):
    """Undo what Trainer(deterministic=True) and Lightning's Ctrl+C handling change process-wide."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    deterministic = torch.are_deterministic_algorithms_enabled()
    handler = signal.getsignal(signal.SIGINT)
    yield
    torch.use_deterministic_algorithms(deterministic)
    signal.signal(signal.SIGINT, handler)


def _fit(root, resumable, callbacks=(), ckpt_path=None):
    module = Linear()
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=root,
        callbacks=list(callbacks),
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    trainer.fit(module, datamodule=Data(resumable), ckpt_path=ckpt_path, weights_only=True)
    return module


def _interrupted_and_resumed(tmp_path, resumable, every, interrupt):
    def checkpoints(name):
        return ModelCheckpoint(dirpath=tmp_path / name, filename="{step}", every_n_train_steps=every, save_top_k=-1)

    counts = CheckSavedCount()
    with pytest.raises(SystemExit):  # Lightning handles KeyboardInterrupt by a graceful exit
        _fit(tmp_path / "b", resumable, [checkpoints("b"), InterruptAtStep(interrupt), counts])
    saved = (interrupt // every) * every
    resumed = _fit(tmp_path / "c", resumable, ckpt_path=tmp_path / "b" / f"step={saved}.ckpt")
    return resumed, saved, counts.saved


# every 3 steps: the last checkpoint is mid-epoch 2 (2 of its 4 batches done);
# every 4 steps: the checkpoint is at the end of epoch 1
@pytest.mark.filterwarnings("ignore:.*does not have many workers")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used")  # no checkpoints after
@pytest.mark.parametrize("every, interrupt", [(3, 7), (4, 6)])
def test_resume_mid_epoch_repeats_the_uninterrupted_run_exactly(tmp_path, lightning_globals, every, interrupt):
    full = _fit(tmp_path / "a", True)
    assert len(full.seen) == 8
    resumed, saved, counts = _interrupted_and_resumed(tmp_path, True, every, interrupt)
    assert resumed.seen == full.seen[saved:]
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert counts and all(batches == [ready] for _, batches, ready in counts)


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
@pytest.mark.filterwarnings("ignore:.*your dataloader is not resumable")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used")
def test_a_plain_dataloader_does_not_resume_exactly(tmp_path, lightning_globals):
    """The same scenario with torch's DataLoader: the resumed run trains on other batches (the test has teeth)."""
    full = _fit(tmp_path / "a", False)
    resumed, saved, _ = _interrupted_and_resumed(tmp_path, False, 3, 7)
    assert len(resumed.seen) == len(full.seen[saved:]) == 2
    assert resumed.seen != full.seen[saved:]
    assert not torch.equal(full.layer.weight, resumed.layer.weight)
