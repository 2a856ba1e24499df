"""Publish a packed model to the Hugging Face Hub, where espnet_model_zoo finds it.

    python -m espnet_omni.bin.publish --model_zip exp/asr_omni_router/asr_omni_router.zip \\
        --repo_id myname/omni_asr_omni_router [--results exp/RESULTS.md] [--dry_run]

Unpacks the zip into ``<zip dir>/hf_<name>/``, writes a model card (README.md: what the
model is, how to load it with espnet-omni, its results) and uploads the folder with
``huggingface_hub`` (log in first: ``huggingface-cli login`` or HF_TOKEN). ``--dry_run``
prepares the folder without uploading.
"""

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

import yaml

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


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_zip", type=Path, required=True)
    parser.add_argument("--repo_id", required=True, help="<user or org>/<name>")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md for the card")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="prepare the folder only")
    args = parser.parse_args(cmd)

    if not args.model_zip.exists():
        sys.exit(f"ERROR: {args.model_zip}: missing (run the packing stage first)")
    if args.repo_id.count("/") != 1:
        sys.exit(f"ERROR: --repo_id must be <user or org>/<name>, got '{args.repo_id}'")
    folder = args.model_zip.parent / f"hf_{args.model_zip.stem}"
    if folder.exists():
        shutil.rmtree(folder)
    with zipfile.ZipFile(args.model_zip) as archive:
        archive.extractall(folder)
    meta_file = folder / "meta.yaml"
    meta = yaml.safe_load(meta_file.read_text()) if meta_file.exists() else None
    asr_config = (meta or {}).get("yaml_files", {}).get("asr_train_config")
    if not asr_config or not (folder / asr_config).exists():
        sys.exit(f"ERROR: {args.model_zip}: no meta.yaml naming an asr_train_config inside "
                 "(pack it with espnet2.bin.pack asr)")
    config = yaml.safe_load((folder / asr_config).read_text())
    has_lm = "lm_file" in meta.get("files", {})
    results = args.results.read_text() if args.results and args.results.exists() else "Not reported."
    (folder / "README.md").write_text(CARD.format(
        repo_id=args.repo_id,
        encoder=config.get("encoder"),
        encoder_yaml=yaml.safe_dump(
            {"encoder": config.get("encoder"), "encoder_conf": config.get("encoder_conf")}, sort_keys=False
        ).strip(),
        results=results,
        decoding=DECODING_WITH_LM if has_lm else DECODING_GREEDY,
    ).replace("{repo_id}", args.repo_id))
    if args.dry_run:
        print(f"prepared {folder} (not uploaded)")
        return

    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=args.repo_id,
                      commit_message=f"Upload {args.model_zip.name} (espnet-omni)")
    print(f"uploaded {folder} to https://huggingface.co/{args.repo_id}")


if __name__ == "__main__":
    main()
