"""Training the networks: the one epoch loop (:mod:`.loop`), the spectral CNNs
(:mod:`.spectral`), the redshift networks (:mod:`.redshift`) and the kinematic model
(:mod:`.kinematics`). A task's ``train`` method reaches them; nothing here runs a catalog."""
