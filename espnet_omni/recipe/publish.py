"""A packed model as a Hugging Face model folder with a model card, and its upload.

``prepare_model_folder`` unpacks an ``espnet2.bin.pack`` zip into ``<zip dir>/hf_<name>/`` and
writes ``README.md`` (what the model is, how to load it with espnet-omni, its results);
``upload_model_folder`` pushes the folder with ``huggingface_hub``, where espnet_model_zoo's
``Speech2Text.from_pretrained`` finds it.
"""

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

import yaml

from espnet_omni.extras import require_extra

CARD = """---
library_name: espnet
tags:
- espnet
- audio
- automatic-speech-recognition
- mixture-of-experts
- espnet-omni
license: apache-2.0
---

# {repo_id}

ESPnet CTC ASR model with a `{encoder}` encoder from the espnet-omni plugin (Omni-router /
Switch Mixture-of-Experts Transformer encoders; Gu et al., *Omni-Router*, ASRU 2025,
arXiv:2507.05724).

## Usage

```sh
pip install espnet-omni
```

```python
import espnet_omni  # registers the omni_router / switch / dense_transformer encoders
import soundfile
from espnet2.bin.asr_inference import Speech2Text

{decoding}
speech, rate = soundfile.read("speech.wav")  # 16 kHz mono
text, *_ = speech2text(speech)[0]
```

## Encoder

```yaml
{encoder_yaml}
```

## Results

{results}
"""


DECODING_GREEDY = """# greedy CTC (best path)
speech2text = Speech2Text.from_pretrained("{repo_id}", ctc_weight=1.0, beam_size=1, lm_weight=0.0)"""
DECODING_WITH_LM = """# CTC beam search with the packed token LM (the recipe's decoding), or greedy CTC
speech2text = Speech2Text.from_pretrained("{repo_id}", ctc_weight=1.0, beam_size=5,
                                          lm_weight=1.5, penalty=0.5)
# speech2text = Speech2Text.from_pretrained("{repo_id}", ctc_weight=1.0, beam_size=1, lm_weight=0.0)"""


def prepare_model_folder(model_zip: Path, repo_id: str, results: Optional[Path] = None) -> Path:
    """Unpack ``model_zip`` beside itself as ``hf_<stem>/`` with a model card; returns the folder.

    The folder is built aside and swapped in only when complete, so a bad zip leaves an
    earlier folder as it was. Raises FileNotFoundError for a missing zip, ValueError for a
    ``repo_id`` that is not ``<user or org>/<name>`` or a zip without an ASR config.
    """
    model_zip = Path(model_zip)
    if not model_zip.exists():
        raise FileNotFoundError(f"{model_zip}: missing (run the packing stage first)")
    if repo_id.count("/") != 1:
        raise ValueError(f"--repo_id must be <user or org>/<name>, got '{repo_id}'")
    folder = model_zip.parent / f"hf_{model_zip.stem}"
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=model_zip.parent))
    try:
        with zipfile.ZipFile(model_zip) as archive:
            archive.extractall(staging)
        meta_file = staging / "meta.yaml"
        meta = (yaml.safe_load(meta_file.read_text()) if meta_file.exists() else None) or {}
        asr_config = meta.get("yaml_files", {}).get("asr_train_config")
        if not asr_config or not (staging / asr_config).exists():
            raise ValueError(f"{model_zip}: no meta.yaml naming an asr_train_config inside "
                             "(pack it with espnet2.bin.pack asr)")
        config = yaml.safe_load((staging / asr_config).read_text())
        has_lm = "lm_file" in meta.get("files", {})
        (staging / "README.md").write_text(CARD.format(
            repo_id=repo_id,
            encoder=config.get("encoder"),
            encoder_yaml=yaml.safe_dump(
                {"encoder": config.get("encoder"), "encoder_conf": config.get("encoder_conf")},
                sort_keys=False,
            ).strip(),
            results=results.read_text() if results and results.exists() else "Not reported.",
            decoding=DECODING_WITH_LM if has_lm else DECODING_GREEDY,
        ).replace("{repo_id}", repo_id))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def upload_model_folder(folder: Path, repo_id: str, private: bool = False,
                        commit_message: str = "Upload model (espnet-omni)") -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``folder``; returns the model's URL.

    Needs a login (``huggingface-cli login`` or ``HF_TOKEN``).
    """
    api = require_extra("huggingface_hub", "Uploading to the Hugging Face Hub").HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return f"https://huggingface.co/{repo_id}"
