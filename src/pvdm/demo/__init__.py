"""`pvdm demo`: the run (`run`), its samples and metrics (`outputs`) and its `report.html` (`report`)."""
