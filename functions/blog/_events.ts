// The events of the blog example, shared by the function that emits them and their listeners.

import { defineEvent, z } from "../../runtime";

/** A comment was saved (the Symfony article's `comment.created`, with the data listeners need). */
export const commentCreated = defineEvent(
  "comment.created",
  z.object({
    commentId: z.number().int(),
    postId: z.number().int(),
    author: z.string(),
    body: z.string(),
  }),
);
