"""The benchmark test sets and the training sets, prepared from the corpora's official distributions.

``test_sets`` names the test sets (in the paper's column order) and prepares them, ``prepare``
writes a test set's Kaldi data dir (audio cut to one FLAC per utterance), ``audio`` reads any of
the corpora's audio formats at 16 kHz mono, and one module per corpus lists a set's utterances
from its on-disk layout. ``train_sets`` names the training sets (LibriSpeech 960 h, Libriheavy)
and ``train_dir`` writes them streamed, without copying audio (Libriheavy as ``segments`` dirs).
"""
