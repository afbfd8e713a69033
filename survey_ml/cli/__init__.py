"""The command line: ``survey-ml`` (:mod:`.main`, subcommands as thin layers over the API) and
the MPI launcher (:mod:`.mpi_launch`)."""
