"""espnet-omni: shared-router (Omni-router) Mixture-of-Experts ASR encoders for ESPnet."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "espnet_omni" / "version.py").read_text(), version)

install_requires = [
    # 202511 and 0.1.7 are the newest for Python 3.11; 202611 and 0.1.11 need Python >= 3.12.
    "espnet>=202511,<=202611",
    "espnet_model_zoo>=0.1.7,<=0.1.11",
    "torch>=2.1",
    # espnet2.tasks.asr imports torchaudio; espnet 202511 lists it only in its [all] extra.
    "torchaudio",
    "typeguard",
    # ESPnet's CER report (cer_ctc) imports it; ESPnet 202611 moved it to its [asr] extra.
    "editdistance",
]

# The recipe's toolbox (egs2/omni_asr): ``pip install 'espnet-omni[recipe]'``. The modules that
# use these import them through espnet_omni.extras.require_extra, which names that command.
recipe_requires = [
    # ESPnet's trainer logs to both by default; the package's training commands turn each off
    # where it is missing (espnet_omni.training_logs). The recipe keeps the curves.
    "matplotlib",
    "tensorboard",
    # Scoring: one pinned normaliser for references and hypotheses.
    "whisper-normalizer==0.1.15",
    # The generated default corpus (eSpeak NG shared library and voice data, no apt).
    "espeakng-loader==0.2.4",
    # The benchmark test sets: lhotse reads most corpus layouts; desphere decodes the
    # Shorten-compressed NIST SPHERE of WSJ and Hub5'00 (with its Rust accelerator where a
    # wheel exists); soxr resamples.
    "lhotse>=1.33,<2",
    "desphere>=0.1.1",
    'desphere-native>=0.1.1; sys_platform == "linux" and platform_machine == "x86_64"',
    "soxr",
    # Publishing to the Hugging Face Hub.
    "huggingface_hub",
    # Imported by the recipe's modules; also installed with ESPnet.
    "numpy",
    "PyYAML",
    "sentencepiece",
    "soundfile",
    "tqdm",
]

extras_require = {
    "recipe": recipe_requires,
    # The tests cover the recipe.
    "test": recipe_requires + ["pytest>=7", "pytest-timeout"],
    "hf": ["transformers"],
}

setup(
    name="espnet-omni",
    version=version["__version__"],
    description="Omni-router and Switch Mixture-of-Experts CTC encoders for ESPnet",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["espnet_omni", "espnet_omni.*"]),
    install_requires=install_requires,
    extras_require=extras_require,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
