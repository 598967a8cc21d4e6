"""Built-in mkd plugins, registered through the ``mkd`` entry-point group like any other."""
