"""Stand-in for the ``tensorrt_llm`` package's launch path, for machines without GPUs.

Only what ``trtllm-llmapi-launch`` (and ``rank-launch``'s default commands) run is here:
``python3 -m tensorrt_llm.llmapi.mgmn_leader_node [--action start|stop]`` and
``python3 -m tensorrt_llm.llmapi.mgmn_worker_node``. Each replaces itself with the MPI-real
stand-in binary (``shim-leader``, ``shim-worker``), which initialises MPI first thing, as
importing the real package does (its ``__init__`` imports mpi4py). So a leader's stop helper
started with the running world's environment fails inside ``MPI_Init`` here as it does with the
real package.

Put the directory holding this package on ``PYTHONPATH``; the binaries are taken from
``$SHIM_BIN_DIR`` when set, else from ``PATH``.
"""
