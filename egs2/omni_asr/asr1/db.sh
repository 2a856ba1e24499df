# Where the benchmark corpora are on disk, as their official archives unpack; empty: not
# available (stage 1 skips the test sets of that corpus and says so). The generated corpus
# needs none of them. A variable already set in the environment is kept.
#
# LIBRISPEECH  the folder holding LibriSpeech/ (test-clean/, test-other/; for training also
#              train-clean-100/, train-clean-360/, train-other-500/, dev-clean/, dev-other/)
# LIBRIHEAVY   the folder holding Libriheavy's cut manifests
#              (libriheavy_cuts_{small,medium,large,dev}.jsonl.gz)
# LIBRILIGHT   the folder holding the LibriLight audio the manifests cut, as its archives unpack
#              ({small,medium,large}/<speaker>/<book>/<file>.flac); the manifests' sources
#              (download/librilight/<subset>/...) are resolved against it
# TEDLIUM3     the folder holding TEDLIUM_release-3/ (legacy/test/{sph,stm}/)
# WSJ0         the folder holding the LDC93S6B CD folders (11-13.1/, 11-14.1/, ...)
# COMMONVOICE  the folder holding cv-corpus-<version>/en/ (test.tsv, clips/)
# FLEURS       the folder holding en_us/ (test.tsv, audio/test/)
# VOXPOPULI    the folder holding transcribed_data/en/ (asr_test.tsv, <year>/<id>.ogg)
# AMI          the folder holding amicorpus/ and the manual annotations (ami_public_manual_1.6.2)
# CHIME6       the folder holding CHiME6/ (audio/eval/, transcriptions/eval/)
# EVAL2000     two folders, as ESPnet's swbd recipe: the LDC2002S09 hub5e_00 speech folder
#              (english/*.sph, english/hub5e_00.pem) and the LDC2002T43 transcripts folder
#              (reference/hub5e00.english.000405.stm, reference/en20000405_hub5.glm)
LIBRISPEECH=${LIBRISPEECH:-}
LIBRIHEAVY=${LIBRIHEAVY:-}
LIBRILIGHT=${LIBRILIGHT:-}
TEDLIUM3=${TEDLIUM3:-}
WSJ0=${WSJ0:-}
COMMONVOICE=${COMMONVOICE:-}
FLEURS=${FLEURS:-}
VOXPOPULI=${VOXPOPULI:-}
AMI=${AMI:-}
CHIME6=${CHIME6:-}
EVAL2000=${EVAL2000:-}
