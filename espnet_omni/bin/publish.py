"""Publish a packed model to the Hugging Face Hub, where espnet_model_zoo finds it.

    python -m espnet_omni.bin.publish --model_zip exp/asr_omni_router/asr_omni_router.zip \\
        --repo_id myname/omni_asr_omni_router [--results exp/RESULTS.md] [--license apache-2.0] \\
        [--language en] [--dataset openslr/librispeech_asr] [--training_data "LibriSpeech 960 h"] \\
        [--dry_run]

Unpacks the zip into ``<zip dir>/hf_<name>/`` and writes a model card (README.md: what the
model is, how to load it with espnet-omni, its training data, results and WERs as the card's
eval results, the routing pictures packed with it, the citation and the license), checked
offline against what the Hub reads. Then uploads the folder with ``huggingface_hub`` (log in
first: ``huggingface-cli login`` or HF_TOKEN); without a token or network it stops with the
folder ready. ``--dry_run`` prepares the folder and lists what would be uploaded.
"""

import argparse
import sys
from pathlib import Path


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_zip", type=Path, required=True)
    parser.add_argument("--repo_id", required=True, help="<user or org>/<name>")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md for the card")
    parser.add_argument("--license", default="apache-2.0", help="license identifier of the Hub")
    parser.add_argument("--language", nargs="+", default=["en"])
    parser.add_argument("--dataset", action="append", default=[],
                        help="Hub dataset id of the training data (repeat for several)")
    parser.add_argument("--training_data", default=None,
                        help="what the model was trained on, for the card")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true",
                        help="prepare the folder and list what would be uploaded")
    args = parser.parse_args(cmd)

    from espnet_omni.extras import MissingExtraError
    from espnet_omni.recipe.publish import (
        UploadError,
        folder_listing,
        prepare_model_folder,
        upload_model_folder,
    )

    try:
        folder = prepare_model_folder(args.model_zip, args.repo_id, args.results, args.license,
                                      args.language, args.dataset, args.training_data)
    except (FileNotFoundError, ValueError, MissingExtraError) as err:
        sys.exit(f"ERROR: {err}")
    if args.dry_run:
        listing = folder_listing(folder)
        print(f"prepared {folder}; an upload would send to {args.repo_id} "
              f"{len(listing)} files, {sum(size for _, size in listing) / 2**20:.1f} MiB:")
        for name, size in listing:
            print(f"  {name} ({size} bytes)")
        return
    try:
        url = upload_model_folder(folder, args.repo_id, args.private,
                                  commit_message=f"Upload {args.model_zip.name} (espnet-omni)")
    except UploadError as err:
        sys.exit(f"ERROR: {err}")
    print(f"uploaded {folder} to {url}")


if __name__ == "__main__":
    main()
