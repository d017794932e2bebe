"""`dltrain serve`: trained runs answering predictions over HTTP (needs the serve extra).

models.py loads and describes the runs, batching.py combines concurrent requests into one
prediction, wire.py turns bodies into cells and predictions into answers, app.py is the
Starlette app, server.py runs it with uvicorn (signals, workers)."""
