"""Built-in editing methods; importing this package registers them (one line per method)."""

from editkit import baseline  # noqa: F401  (the unedited "none" row)

from . import ft  # noqa: F401
from . import grace  # noqa: F401
from . import memoir  # noqa: F401
from . import wise  # noqa: F401
from . import rome  # noqa: F401
from . import memit  # noqa: F401
from . import alphaedit  # noqa: F401
