/** The compatibility suite against the reference `socket.io` server. */
import { compatSuite } from "./compat.js";
import { startReference } from "./helpers/reference.js";

compatSuite(startReference);
