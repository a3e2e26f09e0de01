// Copies the gRPC definitions this package loads at runtime from the repository's proto/
// into the package, so a published package carries them (they are not checked in twice).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const from = join(pkg, "../../proto/herald/v1");
const to = join(pkg, "proto/herald/v1");
mkdirSync(to, { recursive: true });
for (const file of ["api.proto", "backend.proto"]) copyFileSync(join(from, file), join(to, file));
