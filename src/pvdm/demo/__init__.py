"""`pvdm demo`: the run (`run`), its samples and metrics (`results`) and its `report.html` (`report`)."""
