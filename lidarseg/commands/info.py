"""`lidarseg info`: versions, devices and threads, for bug reports and set-up checks."""
import os
import platform


def add_arguments(parser):
    pass


def run(args) -> int:
    import numba
    import numpy
    import torch

    import lidarseg

    print(f"lidarseg     {lidarseg.__version__} ({lidarseg.PROJECT_ROOT})")
    print(f"python       {platform.python_version()} ({platform.platform()})")
    print(f"torch        {torch.__version__}")
    print(f"numpy        {numpy.__version__}")
    print(f"numba        {numba.__version__}")
    print(f"cpu cores    {os.cpu_count()}")
    print(f"torch threads {torch.get_num_threads()}  numba threads {numba.get_num_threads()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"cuda:{i}       {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
        print(f"cuda         {torch.version.cuda}, cudnn {torch.backends.cudnn.version()}, "
              f"bf16 {torch.cuda.is_bf16_supported()}")
    else:
        print("cuda         not available (CPU only)")
    return 0
