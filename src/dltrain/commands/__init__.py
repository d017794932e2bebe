"""One module per command (fit, check, evaluate, predict, init, tune, explain, export, serve).
The CLI calls these functions and renders their results; nothing here prints or exits."""
