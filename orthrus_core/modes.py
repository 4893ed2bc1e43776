"""The engine modes, named once: how the decode loop's passes run (orthrus_core.engine, whose `check_engine`
says whether a mode runs on a device and resolves "auto"). Torch-free, so that the command line lists them
without loading torch."""

ENGINES = ("eager", "compile", "cudagraph")
AUTO = "auto"  # the fastest exact mode the device runs (orthrus_core.engine.default_engine)
ENGINE_CHOICES = (AUTO, *ENGINES)
