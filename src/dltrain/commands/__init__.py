"""One module per command (fit, check, evaluate, predict, init, tune, explain, export) over
a shared preparation step (common). The CLI calls these functions and renders their results;
nothing here prints or exits."""
