"""Stand-in for ``tensorrt_llm.llmapi``: the MPI leader and worker entry points."""
