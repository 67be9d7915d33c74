"""The search engine.

* :mod:`.scheduler` and :mod:`.racing` decide which fold runs next and which
  configuration stops (pure Python); :mod:`.replay` drives the scheduler with
  recorded or synthetic fold scores, as Ray Tune would, without Ray;
* :mod:`.searcher` adapts them to Ray Tune, and :mod:`.runner` wires Ray Tune;
* :mod:`.fold` prepares one fold (builder and loader, checked), :mod:`.trainable`
  trains it in a Ray worker;
* :mod:`.store` keeps the experiment folder; :mod:`.progress` shows the live
  leaderboard; :mod:`.quiet` keeps TensorFlow's and Tune's chatter off the terminal.
"""
