"""A language model through a running devnet (`trainmesh devnet --job lm`): examples/lm_job.py,
as a researcher copies it, finds the fortunes text dataset, trains a byte-level transformer to the
target held-out loss, downloads the certified weights, and writes with them; the numpy model
measures a loss on the corpus near the certified held-out loss."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterator

import pytest

from test_devnet import REPO, running_devnet, wait_for
from trainmesh import (
    BASE_UNITS_PER_TRAIN,
    Client,
    Key,
    Transfer,
    checkpoint_metadata,
    load_weights,
)

FORTUNES = Path("/usr/share/games/fortunes")


@pytest.fixture(scope="module")
def lm_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    if not FORTUNES.is_dir():
        # ./scripts/test.sh installs it; CI must not pass by skipping.
        assert "CI" not in os.environ, f"{FORTUNES} missing: apt-get install fortunes"
        pytest.skip(f"{FORTUNES} not installed (apt-get install fortunes)")
    with running_devnet(tmp_path_factory.mktemp("lm-devnet"), "--job", "lm") as c:
        yield c


def test_the_lm_example_trains_downloads_and_writes(lm_client: Client, tmp_path: Path) -> None:
    researcher = Key.devnet("researcher")
    wait_for("the devnet's own job", lambda: lm_client.nonce(researcher.address) or None, 120.0)
    key = Key.generate()
    receipt = lm_client.execute(researcher, Transfer.of(key.address, 1_000 * BASE_UNITS_PER_TRAIN))
    assert receipt["status"] == "executed"

    spec = importlib.util.spec_from_file_location("lm_job", REPO / "examples" / "lm_job.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(
        ["--gateway", lm_client.url, "--out", str(tmp_path / "lm.safetensors")], key=key
    )
    assert out["loss"] <= 2.6
    assert checkpoint_metadata(out["weights"])["step"] % 200 == 0
    assert len(out["text"]) > 0
    # The held-out shards go to evaluators only; on the corpus as the provider reads it (each
    # quotation's `%` line a blank line), the downloaded model's numpy loss is near the certified
    # held-out loss, far below a uniform guess (ln 256 = 5.55).
    first = sorted(p for p in FORTUNES.iterdir() if p.is_file() and not p.suffix)[0]
    text = b"".join(
        b"\n" if line == b"%" else line + b"\n" for line in first.read_bytes().split(b"\n")
    )
    weights = load_weights(out["weights"])
    measured = out["model"].loss(weights, list(text[: 64 * 64 + 1]), exact=False)
    print(f"numpy loss on the corpus's first 4,096 bytes: {measured:.4f}, certified {out['loss']:.4f}")
    assert abs(measured - out["loss"]) < 0.6
