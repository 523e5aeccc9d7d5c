"""The tiny test model builder; its logic ships in the package (loopbot/demo/tiny.py) for `loopbot demo --quick`."""

from loopbot.demo.tiny import CHATML_TEMPLATE, CORPUS, build_tiny_adapter, build_tiny_model  # noqa: F401
