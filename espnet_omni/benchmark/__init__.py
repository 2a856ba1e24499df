"""Speed and memory benchmarks of espnet-omni's MoE layer and encoders.

``benchmarks/run.py`` is the command; these modules hold what it measures:

* ``timing``: interleaved timing, peak and activation memory, the CPU allocator's settings;
* ``peers``: the implementations the MoE layer is compared with, and the layer as benchmarked;
* ``ffn``, ``encoder``, ``decode``, ``memory``: the CPU report's sections;
* ``gpu``: the layer and the encoders on a CUDA GPU at the released shape;
* ``report``: the targeted ratios and the markdown table.
"""
