"""A packed model as a Hugging Face model folder with a model card, and its upload.

``prepare_model_folder`` unpacks an ``espnet2.bin.pack`` zip into ``<zip dir>/hf_<name>/`` and
writes ``README.md`` (what the model is, how to load it with espnet-omni, its training data,
results, routing pictures, citation and license), checked offline by ``validate_card``;
``upload_model_folder`` pushes the folder with ``huggingface_hub``, where espnet_model_zoo's
``Speech2Text.from_pretrained`` finds it.
"""

import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import yaml

from espnet_omni.extras import require_extra

# The license identifiers the Hub's card metadata accepts (huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear
c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0
cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0
cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl
ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0
odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
deepfloyd-if-license llama2 llama3 llama3.1 llama3.2 gemma unknown other
""".split())

CITATION = """```bibtex
@inproceedings{gu2025omnirouter,
  title = {Omni-Router: Sharing Routing Decisions in Sparse Mixture-of-Experts for Speech Recognition},
  author = {Gu, Zijin and Likhomanenko, Tatiana and Jaitly, Navdeep},
  booktitle = {IEEE Automatic Speech Recognition and Understanding Workshop (ASRU)},
  year = {2025},
  note = {arXiv:2507.05724}
}
@inproceedings{watanabe2018espnet,
  title = {{ESPnet}: End-to-End Speech Processing Toolkit},
  author = {Watanabe, Shinji and Hori, Takaaki and Karita, Shigeki and Hayashi, Tomoki and Nishitoba, Jiro and Unno, Yuya and Enrique Yalta Soplin, Nelson and Heymann, Jahn and Wiesner, Matthew and Chen, Nanxin and Renduchintala, Adithya and Ochiai, Tsubasa},
  booktitle = {Interspeech},
  year = {2018}
}
```"""

CARD = """---
{metadata}
---

# {repo_id}

ESPnet CTC speech recognition model with the `{encoder}` encoder of the espnet-omni plugin:
{what}

## Usage

```sh
pip install espnet-omni
python -m espnet_omni.bin.transcribe --model {repo_id} speech.wav   # any rate, any channels
```

```python
import espnet_omni  # registers the omni_router / switch / dense_transformer encoders
import soundfile
from espnet2.bin.asr_inference import Speech2Text

{decoding}
speech, rate = soundfile.read("speech.wav")  # 16 kHz mono
text, *_ = speech2text(speech)[0]
```

## Model

```yaml
{encoder_yaml}
```

## Training data

{training_data}

## Results

{results}
{routing}
## Citation

{citation}

## License

{license}
"""

WHAT = {
    "omni_router": "a Transformer encoder whose feed-forward blocks are top-1 Mixture-of-Experts "
    "layers sharing ONE router (the Omni-router of Gu et al., ASRU 2025).",
    "switch": "a Transformer encoder whose feed-forward blocks are top-1 Mixture-of-Experts layers, "
    "each with its own router (Switch Transformer), the baseline of the Omni-router paper.",
    "dense_transformer": "a Transformer encoder with ordinary feed-forward blocks, the dense twin of "
    "the Omni-router and Switch models.",
}


DECODING_GREEDY = """# greedy CTC (best path)
speech2text = Speech2Text.from_pretrained("{repo_id}", ctc_weight=1.0, beam_size=1, lm_weight=0.0)"""
DECODING_WITH_LM = """# CTC beam search with the packed token LM (the recipe's decoding), or greedy CTC
speech2text = Speech2Text.from_pretrained("{repo_id}", ctc_weight=1.0, beam_size=5,
                                          lm_weight=1.5, penalty=0.5)
# speech2text = Speech2Text.from_pretrained("{repo_id}", ctc_weight=1.0, beam_size=1, lm_weight=0.0)"""


def wer_results(results_md: str, model: str) -> List[Tuple[str, str, float]]:
    """(set id, column label, WER %) of ``model``'s row of a RESULTS.md table (averages and sets
    not evaluated left out)."""
    from espnet_omni.recipe.results import read_results_table

    cols, table = read_results_table(results_md)
    return [(c.set_id, c.label, value) for c, value in zip(cols, table.get(model, [])) if value is not None]


def embedded_results(results_md: str, folder: Path) -> str:
    """RESULTS.md as a section of the card: its headings one level under the card's, and its
    relative links pointed at the files of ``folder`` they name (RESULTS.md links its routing
    analysis beside itself; in the folder it sits under the packed paths)."""
    text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", results_md, flags=re.M)

    def relink(match):
        label, target = match.group(1), match.group(2)
        if "://" in target or target.startswith("#") or (folder / target).exists():
            return match.group(0)
        found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob(Path(target).name)
                       if p.as_posix().endswith("/" + target))
        return f"[{label}]({found[0]})" if found else match.group(0)

    return re.sub(r"\[([^\]]*)\]\(([^)\s]+)\)", relink, text)


def card_metadata(repo_id: str, encoder: str, license: str, language: Sequence[str],
                  datasets: Sequence[str], results: Sequence[Tuple[str, str, float]]):
    """The card's metadata as huggingface_hub's ModelCardData (eval results as model-index)."""
    hub = require_extra("huggingface_hub", "The model card's metadata")
    eval_results = [
        hub.EvalResult(task_type="automatic-speech-recognition", dataset_type=set_id,
                       dataset_name=label, dataset_split="test", metric_type="wer",
                       metric_name="WER", metric_value=wer)
        for set_id, label, wer in results
    ] or None
    return hub.ModelCardData(
        language=list(language), license=license, library_name="espnet",
        pipeline_tag="automatic-speech-recognition", datasets=list(datasets) or None,
        tags=["espnet", "audio", "automatic-speech-recognition", "mixture-of-experts",
              "espnet-omni", encoder],
        model_name=repo_id if eval_results else None, eval_results=eval_results,
    )


def validate_card(folder: Path) -> None:
    """Check ``folder/README.md`` offline as the Hub reads it: metadata that huggingface_hub
    parses, a license the Hub knows, the ASR pipeline and library, eval results that round-trip
    through model-index, and every picture it shows present in the folder.

    Raises ValueError naming each problem.
    """
    hub = require_extra("huggingface_hub", "Checking the model card")
    from huggingface_hub.repocard_data import model_index_to_eval_results

    text = (folder / "README.md").read_text()
    problems = []
    try:
        card = hub.ModelCard(text)
    except Exception as err:  # huggingface_hub raises ValueError or yaml errors
        raise ValueError(f"{folder / 'README.md'}: metadata that huggingface_hub cannot read ({err})") from err
    data = card.data.to_dict()
    if data.get("license") not in HUB_LICENSES:
        problems.append(f"license '{data.get('license')}' is not one the Hub knows")
    if data.get("pipeline_tag") != "automatic-speech-recognition":
        problems.append("pipeline_tag is not automatic-speech-recognition")
    if data.get("library_name") != "espnet":
        problems.append("library_name is not espnet")
    if "model-index" in data:
        try:
            name, results = model_index_to_eval_results(data["model-index"])
        except (KeyError, TypeError, ValueError) as err:
            problems.append(f"model-index does not parse ({err})")
        else:
            if any(r.metric_type != "wer" or r.metric_value is None for r in results):
                problems.append("model-index holds a result that is not a WER")
    for picture, target in re.findall(r"(!?)\[[^\]]*\]\(([^)\s]+)\)", card.text):
        if "://" not in target and not target.startswith("#") and not (folder / target).exists():
            problems.append(f"the {'picture' if picture else 'link'} {target} is not in the folder")
    if problems:
        raise ValueError(f"{folder / 'README.md'}: " + "; ".join(problems))


def prepare_model_folder(
    model_zip: Path,
    repo_id: str,
    results: Optional[Path] = None,
    license: str = "apache-2.0",
    language: Sequence[str] = ("en",),
    datasets: Sequence[str] = (),
    training_data: Optional[str] = None,
) -> Path:
    """Unpack ``model_zip`` beside itself as ``hf_<stem>/`` with a checked model card; returns
    the folder.

    The card says what the model is, how to load it with espnet-omni, its training data
    (``training_data``, or the data dirs of its config), its results (``results``, a RESULTS.md:
    the table, and the model's WERs as the card's eval results), the routing pictures packed
    with it, the citation and the license. The folder is built aside and swapped in only when
    complete and its card valid (:func:`validate_card`), so a bad zip leaves an earlier folder as
    it was. Raises FileNotFoundError for a missing zip, ValueError for a ``repo_id`` that is not
    ``<user or org>/<name>``, a license the Hub does not know, a zip without an ASR config or a
    card that does not validate.
    """
    model_zip = Path(model_zip)
    if not model_zip.exists():
        raise FileNotFoundError(f"{model_zip}: missing (run the packing stage first)")
    if repo_id.count("/") != 1:
        raise ValueError(f"--repo_id must be <user or org>/<name>, got '{repo_id}'")
    if license not in HUB_LICENSES:
        raise ValueError(f"--license '{license}' is not a license identifier of the Hub "
                         "(e.g. apache-2.0, mit, cc-by-4.0, other)")
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
        encoder = str(config.get("encoder"))
        has_lm = "lm_file" in meta.get("files", {})
        results_md = results.read_text() if results and results.exists() else ""
        name = model_zip.stem[len("asr_"):] if model_zip.stem.startswith("asr_") else model_zip.stem
        metadata = card_metadata(repo_id, encoder, license, language, datasets,
                                 wer_results(results_md, name))
        pictures = sorted(p.relative_to(staging) for p in staging.rglob("routing/*.png"))
        routing = ""
        if pictures:
            routing = "\n## Routing pictures\n\nThe routing analysis of the recipe (`espnet_omni.bin.analyze_routing`):\n\n" + "\n".join(
                f"![{p.stem}]({p.as_posix()})" for p in pictures) + "\n"
        train_dirs = [Path(entry[0]).parent.name for entry in config.get("train_data_path_and_name_and_type") or []]
        (staging / "README.md").write_text(CARD.format(
            metadata=metadata.to_yaml(),
            repo_id=repo_id,
            encoder=encoder,
            what=WHAT.get(encoder, ""),
            encoder_yaml=yaml.safe_dump(
                {"encoder": config.get("encoder"), "encoder_conf": config.get("encoder_conf")},
                sort_keys=False,
            ).strip(),
            training_data=training_data or (
                f"The data dir `{train_dirs[0]}` of the espnet-omni recipe (egs2/omni_asr/asr1), "
                f"{config.get('max_epoch')} epochs." if train_dirs else "Not reported."),
            results=embedded_results(results_md, staging) or "Not reported.",
            routing=routing,
            citation=CITATION,
            license=f"`{license}`",
            decoding=DECODING_WITH_LM if has_lm else DECODING_GREEDY,
        ).replace("{repo_id}", repo_id))
        validate_card(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


class UploadError(RuntimeError):
    """An upload that could not happen; the prepared folder stays."""


def upload_model_folder(folder: Path, repo_id: str, private: bool = False,
                        commit_message: str = "Upload model (espnet-omni)") -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``folder``; returns the model's URL.

    Raises UploadError without a token (``huggingface-cli login`` or ``HF_TOKEN``) or when the
    Hub cannot be reached, saying that the folder is ready.
    """
    hub = require_extra("huggingface_hub", "Uploading to the Hugging Face Hub")
    if hub.get_token() is None:
        raise UploadError(f"no Hugging Face token: log in with `huggingface-cli login` or set "
                          f"HF_TOKEN, then upload again; {folder} is ready")
    api = hub.HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    except Exception as err:  # no network, refused token, ...: the folder is kept either way
        raise UploadError(f"uploading {folder} to {repo_id} failed ({type(err).__name__}: {err}); "
                          "the folder is ready: upload again once the Hub can be reached") from err
    return f"https://huggingface.co/{repo_id}"


def folder_listing(folder: Path) -> List[Tuple[str, int]]:
    """(path inside the folder, bytes) of every file an upload sends, sorted."""
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size)
                  for p in Path(folder).rglob("*") if p.is_file())
