/* topology.h - declaring the exchange, queues and bindings on an open broker. Internal. */
#ifndef TOOLBOX_TOPOLOGY_H
#define TOOLBOX_TOPOLOGY_H

#include "broker.h"
#include "toolbox/config.h"

/* Declare the exchange, default, platform and service queues and their bindings. */
tbx_status tbx_topology_declare(tbx_broker *b, const tbx_config *cfg, tbx_error *err);

#endif
