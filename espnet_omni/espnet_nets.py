"""ESPnet's Transformer building blocks, from wherever the installed ESPnet keeps them.

espnet 202611 moved the ``espnet.nets`` package to ``espnet2.legacy.nets`` (``espnet`` is now
a small loader package); espnet 202511 has only ``espnet.nets``. Same classes and signatures.
"""

import importlib
import importlib.util

NETS = "espnet2.legacy.nets" if importlib.util.find_spec("espnet2.legacy") else "espnet.nets"


def _transformer(module: str):
    return importlib.import_module(f"{NETS}.pytorch_backend.transformer.{module}")


_attention = _transformer("attention")
_embedding = _transformer("embedding")
_multi_layer_conv = _transformer("multi_layer_conv")
_subsampling = _transformer("subsampling")

MultiHeadedAttention = _attention.MultiHeadedAttention
ConvolutionalPositionalEmbedding = _embedding.ConvolutionalPositionalEmbedding
PositionalEncoding = _embedding.PositionalEncoding
ScaledPositionalEncoding = _embedding.ScaledPositionalEncoding
EncoderLayer = _transformer("encoder_layer").EncoderLayer
LayerNorm = _transformer("layer_norm").LayerNorm
MultiLayeredConv1d = _multi_layer_conv.MultiLayeredConv1d
Conv1dLinear = _multi_layer_conv.Conv1dLinear
PositionwiseFeedForward = _transformer("positionwise_feed_forward").PositionwiseFeedForward
Conv1dSubsampling2 = _subsampling.Conv1dSubsampling2
Conv2dSubsampling = _subsampling.Conv2dSubsampling
Conv2dSubsampling1 = _subsampling.Conv2dSubsampling1
Conv2dSubsampling2 = _subsampling.Conv2dSubsampling2
Conv2dSubsampling6 = _subsampling.Conv2dSubsampling6
Conv2dSubsampling8 = _subsampling.Conv2dSubsampling8
TooShortUttError = _subsampling.TooShortUttError
check_short_utt = _subsampling.check_short_utt
