/** A column of a text table. */
export interface Column<T> {
  header: string;
  value: (row: T) => string;
  /** Numbers read best right-aligned. @default false */
  right?: boolean;
}

/** Lays rows out as a plain-text table with a header line, columns two spaces apart. */
export function formatTable<T>(columns: Column<T>[], rows: readonly T[]): string {
  const cells = rows.map((row) => columns.map((column) => column.value(row)));
  const widths = columns.map((column, index) =>
    Math.max(column.header.length, ...cells.map((line) => (line[index] as string).length)),
  );
  const render = (line: string[]): string =>
    line
      .map((cell, index) => {
        const width = widths[index] as number;
        return columns[index]?.right ? cell.padStart(width) : cell.padEnd(width);
      })
      .join("  ")
      .trimEnd();
  return `${[render(columns.map((column) => column.header)), ...cells.map(render)].join("\n")}\n`;
}

/** Bytes as a short readable size: `142 MB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1_024) return `${bytes} B`;
  if (bytes < 1_048_576) return `${Math.round(bytes / 1_024)} kB`;
  if (bytes < 1_073_741_824) return `${Math.round(bytes / 1_048_576)} MB`;
  return `${(bytes / 1_073_741_824).toFixed(1)} GB`;
}
