"""The `rtformer` command line (`cli`), segmenting files (`segment_files`) and
benchmarks (`bench`): the only layer that prints."""
