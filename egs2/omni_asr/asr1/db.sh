# Paths of corpora on disk. Empty = not available. The generated corpus needs none.
LIBRISPEECH=
TEDLIUM3=
COMMONVOICE=
VOXPOPULI=
FLEURS=
