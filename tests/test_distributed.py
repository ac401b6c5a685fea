"""common.distributed's process-group set-up, with torch's group and CUDA calls stubbed (no second process): the GPU a
rank takes, the collectives' timeout, and the barrier after a dataset is read."""
import datetime

import pytest

from common import data as D
from common import distributed
from common.errors import UserError


@pytest.fixture
def fake_group(monkeypatch):
    """A world of 2 ranks on a node whose task sees 1 GPU: what init_from_env asks of torch is recorded."""
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    monkeypatch.delenv("PRUNING_DDP_BACKEND", raising=False)
    monkeypatch.setattr(distributed, "active", lambda: False)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda i: calls.setdefault("device", i))
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, timeout: calls.update(backend=backend, timeout=timeout))
    return calls


def test_a_rank_takes_its_local_rank_modulo_the_gpus_it_sees_and_a_30_minute_timeout(fake_group):
    assert distributed.init_from_env()
    assert fake_group == {"device": 0, "backend": "nccl", "timeout": datetime.timedelta(minutes=30)}


def test_the_timeout_is_a_setting(fake_group, monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    distributed.init_from_env()
    assert fake_group["timeout"] == datetime.timedelta(minutes=90)


@pytest.mark.parametrize("bad", ["0", "-5", "soon", "inf"])
def test_a_bad_timeout_is_one_line_before_any_group_is_joined(fake_group, monkeypatch, bad):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
    with pytest.raises(UserError, match=f"PRUNING_DDP_TIMEOUT_MINUTES='{bad}' is not a positive number of minutes"):
        distributed.init_from_env()
    assert fake_group == {}


def test_every_rank_waits_for_the_others_once_its_data_is_read(monkeypatch):
    waits = []
    monkeypatch.setattr(D, "barrier", lambda: waits.append("barrier"))
    D.load_dataset("digits")
    assert waits == ["barrier"]
