import type { BuildOptions } from "esbuild";

/** The SDK's root (sdk/typescript). */
export const SDK_ROOT: string;
/** Where the gateway takes the demo from. */
export const DEMO_OUT: string;
/** The files of a build. */
export const DEMO_FILES: readonly string[];
/** The esbuild options of the demo, writing into `outdir`. */
export function demoBuildOptions(outdir: string): BuildOptions;
/** Builds the demo into `outdir`. */
export function buildDemo(outdir: string): Promise<void>;
