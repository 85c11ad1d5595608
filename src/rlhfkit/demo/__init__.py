"""The bundled example project and the demo pipeline that runs it."""
