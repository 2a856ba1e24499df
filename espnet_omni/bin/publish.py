"""Publish a packed model to the Hugging Face Hub, where espnet_model_zoo finds it.

    python -m espnet_omni.bin.publish --model_zip exp/asr_omni_router/asr_omni_router.zip \\
        --repo_id myname/omni_asr_omni_router [--results exp/RESULTS.md] [--dry_run]

Unpacks the zip into ``<zip dir>/hf_<name>/``, writes a model card (README.md: what the
model is, how to load it with espnet-omni, its results) and uploads the folder with
``huggingface_hub`` (log in first: ``huggingface-cli login`` or HF_TOKEN). ``--dry_run``
prepares the folder without uploading.
"""

import argparse
import sys
from pathlib import Path


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_zip", type=Path, required=True)
    parser.add_argument("--repo_id", required=True, help="<user or org>/<name>")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md for the card")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="prepare the folder only")
    args = parser.parse_args(cmd)

    from espnet_omni.recipe.publish import prepare_model_folder, upload_model_folder

    try:
        folder = prepare_model_folder(args.model_zip, args.repo_id, args.results)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"ERROR: {err}")
    if args.dry_run:
        print(f"prepared {folder} (not uploaded)")
        return
    url = upload_model_folder(folder, args.repo_id, args.private,
                              commit_message=f"Upload {args.model_zip.name} (espnet-omni)")
    print(f"uploaded {folder} to {url}")


if __name__ == "__main__":
    main()
