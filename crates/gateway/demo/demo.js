/* The demo chat bundle, built from sdk/typescript/demo (npm run build:demo). */
