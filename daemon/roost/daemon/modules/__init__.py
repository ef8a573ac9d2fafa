"""WebAssembly modules: upload, validation, preparation and the compiled cache.

`wasmparse` reads and checks a module's sections, `prepare` runs Binaryen's asyncify (through
`binaryen`, in a child process), `registry` stores modules by sha256 and keeps each prepared and
compiled once per mode.
"""
