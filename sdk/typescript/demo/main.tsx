/** The demo chat's entry point, bundled into `crates/gateway/demo/demo.js` (npm run build:demo). */
import { createRoot } from "react-dom/client";
import { App } from "./app.js";
import "./demo.css";

const root = document.getElementById("root");
if (root) createRoot(root).render(<App />);
