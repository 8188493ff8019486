// The question is read from data-confirm, never spliced into the script: an id comes from the
// database, and the browser decodes an attribute's entities before running it as script.
/** The onsubmit of an action's form: asks the question in its data-confirm first. */
export const CONFIRM = "return confirm(this.dataset.confirm)";
