"""TensorFlow Lite (LiteRT) conversion: the converter environment (`environment`), the script that
runs in it (`convert`) and the build's call into it (`converter`). Running a `.tflite` file needs only
`ai-edge-litert` and lives in `optimise.runtimes.litert_session`."""
