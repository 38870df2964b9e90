"""``python3 -m tensorrt_llm.llmapi.mgmn_worker_node``: ``shim-worker``."""

from tensorrt_llm._stand_in import exec_stand_in

if __name__ == "__main__":
    exec_stand_in("shim-worker")
