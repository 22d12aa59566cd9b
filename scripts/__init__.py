"""t2i-datasets: a DVC pipeline that builds text-to-image training datasets.

One module per stage; `python -m scripts --help` lists the commands.
"""
