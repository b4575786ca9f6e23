"""CSV and XLSX documents from a header and rows, for exports and reports."""

import csv
import io

import xlsxwriter

# Sniffing the whole of a large file costs time for nothing: its dialect shows in its first lines.
CSV_SNIFF_LENGTH = 4096
# Excel refuses longer sheet names.
XLSX_SHEET_NAME_MAX_LENGTH = 31
EMAIL_HEADERS = ("email", "e-mail", "mail", "email address", "e-mail address")
NAME_HEADERS = ("name", "full name", "contact name")


def csv_bytes(header, rows):
    """A UTF-8 CSV document (with a BOM so that spreadsheet programs detect the encoding)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([["" if value is None else value for value in row] for row in rows])
    return buffer.getvalue().encode("utf-8-sig")


def xlsx_bytes(sheet_name, header, rows):
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    sheet = workbook.add_worksheet(sheet_name[:XLSX_SHEET_NAME_MAX_LENGTH])
    bold = workbook.add_format({"bold": True})
    sheet.write_row(0, 0, header, bold)
    for row_index, row in enumerate(rows, start=1):
        for column, value in enumerate(row):
            if isinstance(value, bool) or value is None:
                sheet.write_string(row_index, column, "" if value is None else str(value))
            elif isinstance(value, (int, float)):
                sheet.write_number(row_index, column, value)
            else:
                sheet.write_string(row_index, column, str(value))
    sheet.freeze_panes(1, 0)
    workbook.close()
    return buffer.getvalue()


def csv_reader(raw):
    """A reader of the rows of CSV bytes (UTF-8 or Windows-1252, delimiter sniffed); raise ValueError if unusable."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValueError("the file is neither UTF-8 nor Windows-1252 text")
    if not text.strip():
        raise ValueError("the file is empty")
    try:
        dialect = csv.Sniffer().sniff(text[:CSV_SNIFF_LENGTH], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    return csv.reader(io.StringIO(text), dialect)


def read_address_csv(raw):
    """Rows of an address file as (row number, email text, name text); raise ValueError if unusable."""
    reader = csv_reader(raw)
    header = [cell.strip().lower() for cell in next(reader, [])]
    email_column = next((index for index, name in enumerate(header) if name in EMAIL_HEADERS), None)
    if email_column is None:
        raise ValueError(f"no email column: the first row must name one of {', '.join(EMAIL_HEADERS)}")
    name_column = next((index for index, name in enumerate(header) if name in NAME_HEADERS), None)
    rows = []
    for row_number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        email = row[email_column].strip() if email_column < len(row) else ""
        name = row[name_column].strip() if name_column is not None and name_column < len(row) else ""
        rows.append((row_number, email, name))
    return rows
