"""``python3 -m tensorrt_llm.llmapi.mgmn_leader_node [--action start|stop]``: ``shim-leader``."""

from tensorrt_llm._stand_in import exec_stand_in

if __name__ == "__main__":
    exec_stand_in("shim-leader")
