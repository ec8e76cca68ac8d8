"""The offline speech engine: a local server speaking the OpenAI Realtime GA protocol on CPU.

`app.run_engine(host, port)` serves it; `brain`, `vad`, `g711` and `protocol` are pure modules, `speech`
wraps the models (Whisper tiny.en, hibari) and `model_files` pins and verifies their files.
"""
