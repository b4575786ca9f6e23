# isort: skip_file
# One family of node kinds a file, imported in the order of the Type list:
# each family places its kinds after those of the families before it.
from . import wait
from . import condition
from . import flow
from . import message
from . import contact
from . import webhook
from . import coupon
