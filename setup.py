"""espnet-omni: shared-router (Omni-router) Mixture-of-Experts ASR encoders for ESPnet."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "espnet_omni" / "version.py").read_text(), version)

install_requires = [
    "espnet==202511",
    "espnet_model_zoo>=0.1.7",
    "torch>=2.1",
    "torchaudio",
    "typeguard",
    "numpy",
    "PyYAML",
    "sentencepiece",
    "soundfile",
    "soxr",
    "tqdm",
    "huggingface_hub",
    # ESPnet's trainer logs to both by default (--use_tensorboard/--use_matplotlib true).
    "matplotlib",
    "tensorboard",
    # Scoring: one pinned normaliser for references and hypotheses.
    "whisper-normalizer==0.1.15",
    # The generated default corpus (eSpeak NG shared library and voice data, no apt).
    "espeakng-loader==0.2.4",
    # The benchmark test sets: lhotse reads most corpus layouts; desphere decodes the
    # Shorten-compressed NIST SPHERE of WSJ and Hub5'00 (with its Rust accelerator where a
    # wheel exists).
    "lhotse>=1.33,<2",
    "desphere>=0.1.1",
    'desphere-native>=0.1.1; sys_platform == "linux" and platform_machine == "x86_64"',
]

extras_require = {
    "test": ["pytest>=7", "pytest-timeout"],
    "hf": ["transformers"],
}

setup(
    name="espnet-omni",
    version=version["__version__"],
    description="Omni-router and Switch Mixture-of-Experts CTC encoders for ESPnet",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["espnet_omni", "espnet_omni.*"]),
    install_requires=install_requires,
    extras_require=extras_require,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
